package deliver

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/smtpcode"
)

// fakeResolver answers from maps; a missing name is NXDOMAIN.
type fakeResolver struct {
	mx      map[string][]*net.MX
	hosts   map[string][]string
	tempErr map[string]bool
	calls   atomic.Int64
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	f.calls.Add(1)
	if f.tempErr[name] {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if mx, ok := f.mx[name]; ok {
		out := make([]*net.MX, len(mx))
		for i, m := range mx {
			c := *m
			out[i] = &c
		}
		return out, nil
	}
	return nil, notFound(name)
}

func (f *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	if a, ok := f.hosts[host]; ok {
		return a, nil
	}
	return nil, notFound(host)
}

func TestRouterMX(t *testing.T) {
	res := &fakeResolver{
		mx: map[string][]*net.MX{
			"gmail.com":       {{Host: "alt1.gmail-smtp-in.l.google.com.", Pref: 10}, {Host: "gmail-smtp-in.l.google.com.", Pref: 5}},
			"acme.example":    {{Host: "ASPMX.L.GOOGLE.COM.", Pref: 1}, {Host: "alt1.aspmx.l.google.com.", Pref: 5}},
			"contoso.example": {{Host: "contoso-example.mail.protection.outlook.com.", Pref: 0}},
			"nullmx.example":  {{Host: ".", Pref: 0}},
			"yahoo.com":       {{Host: "mta5.am0.yahoodns.net.", Pref: 1}},
		},
		hosts:   map[string][]string{"implicit.example": {"192.0.2.1"}},
		tempErr: map[string]bool{"broken.example": true},
	}
	rt := newRouter(&Config{Resolver: res})
	ctx := context.Background()

	r := rt.lookup(ctx, "gmail.com")
	require.Nil(t, r.fail)
	assert.Equal(t, []routeHost{
		{name: "gmail-smtp-in.l.google.com", addr: "gmail-smtp-in.l.google.com:25"},
		{name: "alt1.gmail-smtp-in.l.google.com", addr: "alt1.gmail-smtp-in.l.google.com:25"},
	}, r.hosts)
	assert.Equal(t, SiteGoogle, r.site)

	// A Workspace domain lands on Gmail's site.
	assert.Equal(t, SiteGoogle, rt.lookup(ctx, "acme.example").site)
	assert.Equal(t, SiteMicrosoft, rt.lookup(ctx, "contoso.example").site)
	assert.Equal(t, SiteYahoo, rt.lookup(ctx, "yahoo.com").site)

	r = rt.lookup(ctx, "implicit.example")
	require.Nil(t, r.fail)
	assert.Equal(t, []routeHost{{name: "implicit.example", addr: "implicit.example:25"}}, r.hosts)

	for _, tt := range []struct {
		domain    string
		code      int
		transient bool
		category  smtpcode.Category
	}{
		{"nullmx.example", 556, false, smtpcode.UnknownDomain},
		{"nowhere.example", 550, false, smtpcode.UnknownDomain},
		{"broken.example", 451, true, smtpcode.System},
	} {
		r := rt.lookup(ctx, tt.domain)
		require.NotNil(t, r.fail, tt.domain)
		assert.Equal(t, tt.code, r.fail.reply.Code, tt.domain)
		c := smtpcode.Classify(r.fail.reply)
		assert.Equal(t, tt.transient, c.Transient, tt.domain)
		assert.Equal(t, tt.category, c.Category, tt.domain)
	}
}

func TestRouterCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := &fakeResolver{
			mx:      map[string][]*net.MX{"a.example": {{Host: "mx.a.example.", Pref: 1}}},
			tempErr: map[string]bool{"temp.example": true},
		}
		rt := newRouter(&Config{Resolver: res, MXCacheTTL: time.Minute})
		ctx := context.Background()
		rt.lookup(ctx, "a.example")
		rt.lookup(ctx, "a.example")
		assert.Equal(t, int64(1), res.calls.Load())
		time.Sleep(time.Minute)
		rt.lookup(ctx, "a.example")
		assert.Equal(t, int64(2), res.calls.Load())
		// Transient failures are not cached.
		rt.lookup(ctx, "temp.example")
		rt.lookup(ctx, "temp.example")
		assert.Equal(t, int64(4), res.calls.Load())
	})
}

func TestRouterStaticSmarthostLiteral(t *testing.T) {
	rt := newRouter(&Config{Routes: map[string][]string{"Static.Example": {"mx1.static.example", "10.0.0.1:2525"}}, Port: 587})
	r := rt.lookup(context.Background(), "static.example")
	assert.Equal(t, []routeHost{{"mx1.static.example", "mx1.static.example:587"}, {"10.0.0.1", "10.0.0.1:2525"}}, r.hosts)
	assert.Equal(t, "static.example", r.site)

	r = rt.lookup(context.Background(), "[192.0.2.7]")
	assert.Equal(t, []routeHost{{"192.0.2.7", "192.0.2.7:587"}}, r.hosts)
	assert.Equal(t, "192.0.2.7", r.site)
	r = rt.lookup(context.Background(), "[ipv6:2001:db8::1]")
	assert.Equal(t, []routeHost{{"2001:db8::1", "[2001:db8::1]:587"}}, r.hosts)

	rt = newRouter(&Config{Smarthost: &Smarthost{Addr: "smtp.relay.example.net:587"}, SiteKey: func(d string, hosts []string) string {
		return "relay"
	}})
	r = rt.lookup(context.Background(), "anything.example")
	assert.Equal(t, []routeHost{{"smtp.relay.example.net", "smtp.relay.example.net:587"}}, r.hosts)
	assert.Equal(t, "relay", r.site)
}

func TestSiteOf(t *testing.T) {
	tests := []struct {
		domain string
		hosts  []string
		want   string
	}{
		{"gmail.com", []string{"gmail-smtp-in.l.google.com"}, "google.com"},
		{"acme.example", []string{"aspmx.l.google.com", "alt1.aspmx.l.google.com"}, "google.com"},
		{"hotmail.com", []string{"hotmail-com.olc.protection.outlook.com"}, "outlook.com"},
		{"example.co.uk", []string{"mx.mail.example.co.uk."}, "example.co.uk"},
		{"x.example", nil, "x.example"},
		{"x.example", []string{"192.0.2.1"}, "192.0.2.1"},
		{"localhost", []string{"localhost"}, "localhost"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, SiteOf(tt.domain, tt.hosts), "%s %v", tt.domain, tt.hosts)
	}
}
