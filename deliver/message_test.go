package deliver

import (
	"errors"
	"net"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidateAddress(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		addr      string
		allowNull bool
		wantErr   string // substring; "" = valid
	}{
		{"alice@example.org", false, ""},
		{"Alice.B+tag@Sub.Example.ORG", false, ""},
		{"!#$%&'*+-/=?^_`{|}~@example.org", false, ""},
		{`"john doe"@example.org`, false, ""},
		{`"a\"b"@example.org`, false, ""},
		{`"a@b"@example.org`, false, ""},
		{"user@[192.0.2.1]", false, ""},
		{"user@[IPv6:2001:db8::1]", false, ""},
		{"δοκιμή@παράδειγμα.δοκιμή", false, ""},
		{"user@xn--bcher-kva.example", false, ""},
		{"", true, ""},
		{"", false, "empty address"},
		{"alice", false, "missing @domain"},
		{"@example.org", false, "empty local part"},
		{"alice@", false, "empty domain"},
		{"a..b@example.org", false, "empty atom"},
		{".a@example.org", false, "empty atom"},
		{"a.@example.org", false, "empty atom"},
		{"a b@example.org", false, "not allowed in local part"},
		{"a,b@example.org", false, "not allowed in local part"},
		{`"unterminated@example.org`, false, "unterminated"},
		{`"a"b"@example.org`, false, "unescaped quote"},
		{"alice@example.org\r\nRCPT TO:<evil@x>", false, "CR or LF"},
		{"alice@example.org\n", false, "CR or LF"},
		{"ali\x00ce@example.org", false, "NUL"},
		{"<alice@example.org>", false, "angle bracket"},
		{"alice@example.org> SIZE=1", false, "angle bracket"},
		{"ali\tce@example.org", false, "control character"},
		{"a\xffb@example.org", false, "UTF-8"},
		{"alice@-example.org", false, "must start and end"},
		{"alice@example-.org", false, "must start and end"},
		{"alice@exa_mple.org", false, "not allowed in domain"},
		{"alice@example..org", false, "empty label"},
		{"alice@example.org.", false, "empty label"},
		{"alice@[300.1.1.1]", false, "IPv4"},
		{"alice@[IPv6:1.2.3.4]", false, "IPv6"},
		{"alice@[192.0.2.1", false, "unterminated"},
		{long(64) + "@example.org", false, ""},
		{long(65) + "@example.org", false, "local part is 65 octets"},
		{"a@" + long(63) + ".org", false, ""},
		{"a@" + long(64) + ".org", false, "longer than 63"},
		// the path limit counts the brackets: "<" + 64 + "@" + 189 + ">" = 256
		{long(64) + "@" + strings.Repeat(long(62)+".", 3) + "a", false, "path is 257"},
		{long(64) + "@" + strings.Repeat(long(62)+".", 2) + long(61) + ".a", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			err := ValidateAddress(tt.addr, tt.allowNull)
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestMessagePrepareErrors(t *testing.T) {
	tests := []struct {
		name string
		msg  *Message
		want error
	}{
		{"nil", nil, ErrInvalidMessage},
		{"no recipients", &Message{From: "a@example.org", Data: []byte("x")}, ErrNoRecipients},
		{"bad from", &Message{From: "a@example.org\r\n", To: []string{"b@example.org"}, Data: []byte("x")}, ErrInvalidAddress},
		{"bad to", &Message{From: "a@example.org", To: []string{"b@example.org", "c"}, Data: []byte("x")}, ErrInvalidAddress},
		{"empty data", &Message{From: "a@example.org", To: []string{"b@example.org"}}, ErrInvalidMessage},
		{"both", &Message{From: "a@example.org", To: []string{"b@example.org"}, Data: []byte("x"), Body: strings.NewReader("x")}, ErrInvalidMessage},
		{"nul", &Message{From: "a@example.org", To: []string{"b@example.org"}, Data: []byte("a\x00b")}, ErrInvalidMessage},
		{"reader fails", &Message{From: "a@example.org", To: []string{"b@example.org"}, Body: iotest.ErrReader(errors.New("boom"))}, ErrInvalidMessage},
		{"too large", &Message{From: "a@example.org", To: []string{"b@example.org"}, Data: []byte(strings.Repeat("x", 11))}, ErrMessageTooLarge},
		{"too large reader", &Message{From: "a@example.org", To: []string{"b@example.org"}, Body: strings.NewReader(strings.Repeat("x", 100))}, ErrMessageTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.msg.prepare(10)
			require.ErrorIs(t, err, tt.want)
		})
	}
	var ae *AddressError
	_, err := (&Message{From: "a@example.org", To: []string{"b@example.org", "bad"}, Data: []byte("x")}).prepare(0)
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "To[1]", ae.Field)
	assert.Equal(t, "bad", ae.Address)
}

func TestMessagePrepare(t *testing.T) {
	m := &Message{
		From: "a@example.org",
		To:   []string{"x@One.example", "y@two.example", "x@One.example", "δ@παράδειγμα.example"},
		Body: strings.NewReader("Subject: hi\n\nline\r.\nend"),
		Keys: []string{"mailbox:a@example.org"},
	}
	p, err := m.prepare(0)
	require.NoError(t, err)
	assert.Equal(t, "Subject: hi\r\n\r\nline\r\n.\r\nend", string(p.data))
	assert.Equal(t, []int{0, 1, 0, 2}, p.index)
	require.Len(t, p.rcpts, 3)
	assert.Equal(t, "one.example", p.rcpts[0].domain)
	assert.Equal(t, "xn--hxajbheg2az3al.example", p.rcpts[2].domain)
	assert.True(t, p.smtputf8)
	assert.True(t, m.NeedsSMTPUTF8())
	assert.False(t, (&Message{From: "a@b.c", To: []string{"d@e.f"}}).NeedsSMTPUTF8())
}

func TestNormalizeCRLF(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\rb", "a\r\nb"},
		{"a\r\r\nb", "a\r\n\r\nb"},
		{"\n.\n", "\r\n.\r\n"},
		{"x\n.\r\nMAIL FROM:<evil>", "x\r\n.\r\nMAIL FROM:<evil>"},
		{"end\r", "end\r\n"},
		{"\n\r", "\r\n\r\n"},
		{"\r\n", "\r\n"},
		{"\n\r\n", "\r\n\r\n"},
		{"a\r\n\r", "a\r\n\r\n"},
		{"\r\n\n\r\r\n", "\r\n\r\n\r\n\r\n"},
		{"no line end", "no line end"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, string(NormalizeCRLF([]byte(tt.in))), "%q", tt.in)
	}
}

func TestPunycode(t *testing.T) {
	// RFC 3492 7.1 and well-known names.
	assert.Equal(t, "xn--bcher-kva", punycodeLabel("bücher"))
	assert.Equal(t, "xn--mnchen-3ya", punycodeLabel("münchen"))
	assert.Equal(t, "xn--hxajbheg2az3al", punycodeLabel("παράδειγμα"))
	assert.Equal(t, "xn--fsqu00a", punycodeLabel("例子"))
	assert.Equal(t, "example", punycodeLabel("example"))
}

func FuzzValidateAddress(f *testing.F) {
	for _, s := range []string{"alice@example.org", `"a b"@example.org`, "a@[IPv6:::1]", "δ@παράδειγμα.δοκιμή", "a\r\n@b", "<a@b>", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		err := ValidateAddress(addr, false)
		if err != nil {
			return
		}
		// Whatever is accepted must be safe to put in a command line.
		if strings.ContainsAny(addr, "\r\n\x00<>") {
			t.Fatalf("accepted %q", addr)
		}
		if len(addr)+2 > MaxPathLen {
			t.Fatalf("accepted over-long %q", addr)
		}
		local, domain := splitAddress(addr)
		if local == "" || domain == "" || len(local) > MaxLocalPartLen {
			t.Fatalf("accepted %q", addr)
		}
		_ = routingDomain(domain)
	})
}

func TestTrackConnTail(t *testing.T) {
	for _, writes := range [][]string{
		{"abc\r\n.\r\n"},
		{"abc\r\n", ".\r\n"},
		{"abc\r", "\n", ".", "\r", "\n"},
		{"\r\n.\r\n"},
	} {
		tc := &trackConn{Conn: discardConn{}}
		for _, w := range writes {
			_, err := tc.Write([]byte(w))
			require.NoError(t, err)
		}
		assert.True(t, tc.wroteFinalDot(), "%q", writes)
	}
	tc := &trackConn{Conn: discardConn{}}
	tc.Write([]byte("abc\r\n.\r\nx"))
	assert.False(t, tc.wroteFinalDot())
	tc = &trackConn{Conn: discardConn{}}
	tc.Write([]byte(".\r\n"))
	assert.False(t, tc.wroteFinalDot(), "fewer than 5 bytes written in all")
}

type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
