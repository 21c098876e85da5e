package deliver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"golang.org/x/net/publicsuffix"

	"github.com/sluicemail/sluice/smtpcode"
)

// Resolver looks up mail exchangers and host addresses. *net.Resolver
// satisfies it; tests give a fake.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Smarthost sends everything through one relay (a submission server or an
// ESP), instead of looking up MX records.
type Smarthost struct {
	// Addr is the relay's host:port, e.g. "smtp.example.net:587".
	Addr string
	// Auth returns a new SASL client for each connection (go-sasl clients
	// keep state), e.g. func() sasl.Client { return sasl.NewPlainClient("", user, pass) }.
	// nil: no AUTH.
	Auth func() sasl.Client
	// ImplicitTLS dials TLS at once (port 465, RFC 8314) instead of STARTTLS.
	ImplicitTLS bool
	// AllowInsecureAuth permits AUTH over a connection without TLS; off
	// by default so that credentials never cross the network in clear.
	AllowInsecureAuth bool
}

// routeHost is one SMTP server to try, in order.
type routeHost struct {
	name string // host name (MX target) or IP, for TLS ServerName and logs
	addr string // host:port to dial
}

// route is where the mail for one domain goes.
type route struct {
	domain string
	hosts  []routeHost // preference order
	site   string
	// fail is set when the domain cannot be routed; reply is synthesized
	// (null MX, unknown domain, DNS failure) and classified like any other.
	fail *routeFailure
}

type routeFailure struct {
	reply smtpcode.Reply
	err   error
}

// Synthesized replies for routing failures, in the codes other MTAs use.
var (
	// RFC 7505 4.3: a client SHOULD use 556 5.1.10 for a null MX.
	replyNullMX = smtpcode.Reply{Code: 556, Enhanced: smtpcode.EnhancedCode{Class: 5, Subject: 1, Detail: 10}, Text: "Recipient address has null MX"}
	// RFC 3463 X.1.2 "Bad destination system address".
	replyNoDomain = smtpcode.Reply{Code: 550, Enhanced: smtpcode.EnhancedCode{Class: 5, Subject: 1, Detail: 2}, Text: "Domain not found"}
	// RFC 3463 X.4.3 "Directory server failure".
	replyDNSFailure = smtpcode.Reply{Code: 451, Enhanced: smtpcode.EnhancedCode{Class: 4, Subject: 4, Detail: 3}, Text: "Temporary DNS failure"}
)

// router maps a recipient domain to a route: static map, smarthost or MX.
type router struct {
	resolver  Resolver
	static    map[string][]string
	smarthost *Smarthost
	port      string
	ttl       time.Duration
	siteKey   func(domain string, hosts []string) string

	mu       sync.Mutex
	cache    map[string]cachedRoute
	inflight map[string]*lookupCall
}

type cachedRoute struct {
	r       *route
	expires time.Time
}

type lookupCall struct {
	done chan struct{}
	r    *route
}

const maxCachedRoutes = 10000

func newRouter(cfg *Config) *router {
	r := &router{
		resolver:  cfg.Resolver,
		static:    make(map[string][]string, len(cfg.Routes)),
		smarthost: cfg.Smarthost,
		port:      strconv.Itoa(cmp.Or(cfg.Port, 25)),
		ttl:       cmp.Or(cfg.MXCacheTTL, DefaultMXCacheTTL),
		siteKey:   cfg.SiteKey,
		cache:     make(map[string]cachedRoute),
		inflight:  make(map[string]*lookupCall),
	}
	if r.resolver == nil {
		r.resolver = net.DefaultResolver
	}
	for d, hosts := range cfg.Routes {
		r.static[strings.ToLower(d)] = hosts
	}
	return r
}

// lookup returns the route for domain (lower-case ASCII). It never returns
// nil; failures are in route.fail.
func (rt *router) lookup(ctx context.Context, domain string) *route {
	now := time.Now()
	rt.mu.Lock()
	if c, ok := rt.cache[domain]; ok && now.Before(c.expires) {
		rt.mu.Unlock()
		return c.r
	}
	rt.mu.Unlock()

	var fixed *route
	switch {
	case rt.smarthost != nil:
		host, _, err := net.SplitHostPort(rt.smarthost.Addr)
		if err != nil {
			host = rt.smarthost.Addr
		}
		fixed = rt.finish(&route{domain: domain, hosts: []routeHost{{name: host, addr: rt.smarthost.Addr}}})
	case rt.static[domain] != nil:
		fixed = rt.staticRoute(domain, rt.static[domain])
	case rt.static["*"] != nil:
		fixed = rt.staticRoute(domain, rt.static["*"])
	case strings.HasPrefix(domain, "["):
		fixed = rt.literalRoute(domain)
	}
	if fixed != nil {
		rt.store(domain, fixed, now)
		return fixed
	}

	rt.mu.Lock()
	if call, ok := rt.inflight[domain]; ok {
		rt.mu.Unlock()
		select {
		case <-call.done:
			return call.r
		case <-ctx.Done():
			return &route{domain: domain, fail: &routeFailure{reply: replyDNSFailure, err: ctx.Err()}}
		}
	}
	call := &lookupCall{done: make(chan struct{})}
	rt.inflight[domain] = call
	rt.mu.Unlock()

	r := rt.resolve(ctx, domain)

	rt.mu.Lock()
	delete(rt.inflight, domain)
	rt.mu.Unlock()
	// Transient failures are not cached: the next message asks again.
	if r.fail == nil || !smtpcode.Classify(r.fail.reply).Transient {
		rt.store(domain, r, now)
	}
	call.r = r
	close(call.done)
	return r
}

// store caches r for domain.
func (rt *router) store(domain string, r *route, now time.Time) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.cache) >= maxCachedRoutes {
		for d, c := range rt.cache {
			if !now.Before(c.expires) {
				delete(rt.cache, d)
			}
		}
		if len(rt.cache) >= maxCachedRoutes {
			clear(rt.cache)
		}
	}
	rt.cache[domain] = cachedRoute{r: r, expires: now.Add(rt.ttl)}
}

func (rt *router) staticRoute(domain string, hosts []string) *route {
	r := &route{domain: domain}
	for _, h := range hosts {
		name, _, err := net.SplitHostPort(h)
		if err != nil {
			name, h = h, net.JoinHostPort(h, rt.port)
		}
		r.hosts = append(r.hosts, routeHost{name: name, addr: h})
	}
	if len(r.hosts) == 0 {
		r.fail = &routeFailure{reply: replyNoDomain, err: fmt.Errorf("deliver: static route for %q has no hosts", domain)}
	}
	return rt.finish(r)
}

func (rt *router) literalRoute(domain string) *route {
	lit := strings.TrimPrefix(strings.Trim(domain, "[]"), "ipv6:")
	a, err := netip.ParseAddr(lit)
	if err != nil {
		return &route{domain: domain, fail: &routeFailure{reply: replyNoDomain, err: err}}
	}
	return rt.finish(&route{domain: domain, hosts: []routeHost{{name: a.String(), addr: net.JoinHostPort(a.String(), rt.port)}}})
}

// resolve does the MX lookup with RFC 5321 5.1 rules: MX records in
// preference order, the domain itself when it has no MX (implicit MX), and
// RFC 7505 null MX as a permanent failure.
func (rt *router) resolve(ctx context.Context, domain string) *route {
	r := &route{domain: domain}
	mxs, err := rt.resolver.LookupMX(ctx, domain)
	if err != nil && len(mxs) == 0 {
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			r.fail = &routeFailure{reply: replyDNSFailure, err: err}
			return r
		}
		// No MX: implicit MX, if the domain has an address (RFC 5321 5.1).
		addrs, err := rt.resolver.LookupHost(ctx, domain)
		if err != nil || len(addrs) == 0 {
			if errors.As(err, &dnsErr) && !dnsErr.IsNotFound {
				r.fail = &routeFailure{reply: replyDNSFailure, err: err}
				return r
			}
			r.fail = &routeFailure{reply: replyNoDomain, err: err}
			return r
		}
		r.hosts = []routeHost{{name: domain, addr: net.JoinHostPort(domain, rt.port)}}
		return rt.finish(r)
	}
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return cmp.Compare(a.Pref, b.Pref) })
	for _, mx := range mxs {
		host := strings.TrimSuffix(mx.Host, ".")
		if host == "" {
			// RFC 7505: a single MX of "." says the domain accepts no mail.
			if len(mxs) == 1 {
				r.fail = &routeFailure{reply: replyNullMX}
				return r
			}
			continue
		}
		r.hosts = append(r.hosts, routeHost{name: strings.ToLower(host), addr: net.JoinHostPort(host, rt.port)})
	}
	if len(r.hosts) == 0 {
		r.fail = &routeFailure{reply: replyNullMX}
	}
	return rt.finish(r)
}

func (rt *router) finish(r *route) *route {
	names := make([]string, len(r.hosts))
	for i, h := range r.hosts {
		names[i] = h.name
	}
	if rt.siteKey != nil {
		r.site = rt.siteKey(r.domain, names)
	}
	if r.site == "" {
		r.site = SiteOf(r.domain, names)
	}
	return r
}

// SiteOf returns the default site key of a domain whose mail goes to hosts
// (in preference order): the registrable domain (public suffix + 1) of the
// most preferred host, so that every Google Workspace domain (MX
// aspmx.l.google.com) shares the site "google.com" with gmail.com, and every
// Microsoft 365 domain shares "outlook.com". A host that is an IP address
// is its own site; with no hosts, the recipient domain's registrable domain.
func SiteOf(domain string, hosts []string) string {
	name := domain
	if len(hosts) > 0 {
		name = hosts[0]
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if _, err := netip.ParseAddr(name); err == nil {
		return name
	}
	if site, err := publicsuffix.EffectiveTLDPlusOne(name); err == nil {
		return site
	}
	return name
}
