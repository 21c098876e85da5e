package delivertest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/emersion/go-smtp"
)

// PipeAddr is the address of either end of a pipe connection: the server's
// name (Server.Addr) or the client's identity.
type PipeAddr string

func (PipeAddr) Network() string  { return "pipe" }
func (a PipeAddr) String() string { return string(a) }

// identityOf is the client identity behind a remote address: the IP on TCP,
// the name the dialer passed on a pipe.
func identityOf(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case PipeAddr:
		return string(a)
	case nil:
		return ""
	}
	return a.String()
}

type identityKey struct{}

// WithIdentity returns a context under which dialers of this package connect
// as identity (a simulated sending IP).
func WithIdentity(ctx context.Context, identity string) context.Context {
	return context.WithValue(ctx, identityKey{}, identity)
}

// IdentityFrom returns the identity WithIdentity put in ctx, if any.
func IdentityFrom(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(identityKey{}).(string)
	return id, ok && id != ""
}

// pipeConn names the ends of a net.Pipe.
type pipeConn struct {
	net.Conn
	local, remote PipeAddr
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr { return c.remote }

type pipeListener struct {
	name string
	srv  *Server
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

var pipes = struct {
	sync.Mutex
	next   int
	byName map[string]*pipeListener
}{byName: make(map[string]*pipeListener)}

func newPipeListener(name string) (*pipeListener, error) {
	pipes.Lock()
	defer pipes.Unlock()
	if name == "" {
		pipes.next++
		name = fmt.Sprintf("pipe-%d.delivertest.invalid:25", pipes.next)
	}
	if _, taken := pipes.byName[name]; taken {
		return nil, fmt.Errorf("%w: Addr %q is in use by another pipe server", ErrInvalidConfig, name)
	}
	pl := &pipeListener{name: name, ch: make(chan net.Conn), done: make(chan struct{})}
	pipes.byName[name] = pl
	return pl, nil
}

func unregisterPipe(name string) {
	pipes.Lock()
	defer pipes.Unlock()
	delete(pipes.byName, name)
}

func lookupPipe(addr string) *pipeListener {
	pipes.Lock()
	defer pipes.Unlock()
	return pipes.byName[addr]
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return PipeAddr(l.name) }

func (l *pipeListener) dial(ctx context.Context, identity string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "pipe", Addr: PipeAddr(l.name), Err: err}
	}
	cli, srv := net.Pipe()
	sc := &pipeConn{Conn: srv, local: PipeAddr(l.name), remote: PipeAddr(identity)}
	cc := &pipeConn{Conn: cli, local: PipeAddr(identity), remote: PipeAddr(l.name)}
	select {
	case l.ch <- sc:
		return cc, nil
	case <-l.done:
		err := ErrServerClosed
		cli.Close()
		srv.Close()
		return nil, &net.OpError{Op: "dial", Net: "pipe", Addr: PipeAddr(l.name), Err: err}
	case <-ctx.Done():
		cli.Close()
		srv.Close()
		return nil, &net.OpError{Op: "dial", Net: "pipe", Addr: PipeAddr(l.name), Err: ctx.Err()}
	}
}

// DialContext connects to this server, whatever addr says (so it fits any
// dial hook), as the identity in ctx (WithIdentity), else DefaultIdentity.
// Its signature is that of net.Dialer.DialContext.
func (s *Server) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	id, ok := IdentityFrom(ctx)
	if !ok {
		id = DefaultIdentity
	}
	return s.dialAs(ctx, id)
}

// DialAs returns a dial function that connects to this server, whatever its
// addr argument, as identity (unless ctx carries another, see WithIdentity).
// On TCP identity must be a loopback IP: the connection is bound to it as
// its source (all of 127.0.0.0/8 is loopback on Linux).
func (s *Server) DialAs(identity string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		id := identity
		if c, ok := IdentityFrom(ctx); ok {
			id = c
		}
		return s.dialAs(ctx, id)
	}
}

func (s *Server) dialAs(ctx context.Context, identity string) (net.Conn, error) {
	if s.pipe != nil {
		return s.pipe.dial(ctx, identity)
	}
	return dialTCP(ctx, s.addr, identity)
}

func dialTCP(ctx context.Context, addr, identity string) (net.Conn, error) {
	var d net.Dialer
	if identity != "" {
		ip := net.ParseIP(identity)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("delivertest: identity %q is not a loopback IP, which a TCP client must bind", identity)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// Client dials the server as identity and returns a go-smtp client on the
// connection. go-smtp reads the greeting with the first command, so a
// refusal at connect comes back (as an *smtp.SMTPError) from the first call,
// usually Hello.
func (s *Server) Client(identity string) (*smtp.Client, error) {
	conn, err := s.dialAs(context.Background(), identity)
	if err != nil {
		return nil, err
	}
	return smtp.NewClient(conn), nil
}

// Dialer connects to servers of this package by address: a pipe server's
// name (Server.Addr of a NewPipeServer) reaches it in memory; a loopback
// host:port is dialled over TCP. So one dial hook serves a test with several
// receivers (a static route map to each Server's Addr).
type Dialer struct {
	// Identity is the client's identity (a simulated sending IP) when the
	// context carries none (WithIdentity); empty means DefaultIdentity on
	// pipes and the system's choice on TCP.
	Identity string
}

// DialContext has the signature of net.Dialer.DialContext.
func (d Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	id := d.Identity
	if c, ok := IdentityFrom(ctx); ok {
		id = c
	}
	if pl := lookupPipe(addr); pl != nil {
		if id == "" {
			id = DefaultIdentity
		}
		return pl.dial(ctx, id)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("delivertest: dial %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("delivertest: dial %q: no pipe server has this address and it is not loopback", addr)
	}
	return dialTCP(ctx, addr, id)
}

// DialSource fits dial hooks that pass the source address apart, as
// deliver.Config.Dial does: a valid source is the identity (it wins over
// the context's and d.Identity), so a sender's choice of source IP reaches
// the receiver as on the Internet.
func (d Dialer) DialSource(ctx context.Context, network, addr string, source netip.Addr) (net.Conn, error) {
	if source.IsValid() {
		ctx = WithIdentity(ctx, source.String())
	}
	return d.DialContext(ctx, network, addr)
}
