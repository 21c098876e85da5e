package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
)

// The tests need a real Redis: TestMain starts its own redis-server (from
// PATH) on a free loopback port, or uses SLUICE_TEST_REDIS=host:port.

const (
	envRedis = "SLUICE_TEST_REDIS"
	envChild = "SLUICE_REDISSTORE_CHILD" // marks a re-executed test binary
)

var (
	testAddr   string // the shared Redis
	skipReason string // why there is none
)

// quietLogger drops go-redis's own log lines (dial failures are expected
// in the fault tests).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	if os.Getenv(envChild) != "" {
		testAddr = os.Getenv(envRedis)
		os.Exit(m.Run())
	}
	testAddr = os.Getenv(envRedis)
	if testAddr != "" {
		c := redis.NewClient(&redis.Options{Addr: testAddr, MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := c.Ping(ctx).Err(); err != nil {
			skipReason = envRedis + "=" + testAddr + " does not answer: " + err.Error()
			testAddr = ""
		}
		cancel()
		_ = c.Close()
	}
	var srv *redisServer
	if testAddr == "" && skipReason == "" {
		var err error
		srv, err = startRedis(0)
		if err != nil {
			skipReason = err.Error()
		} else {
			testAddr = srv.addr
			_ = os.Setenv(envRedis, testAddr) // for Example and child processes
		}
	}
	if testAddr == "" && os.Getenv("CI") != "true" {
		// an Example cannot skip itself: leave it out, and say why
		flag.Parse()
		skip := "^Example$"
		if s := flag.Lookup("test.skip").Value.String(); s != "" {
			skip += "|" + s
		}
		_ = flag.Set("test.skip", skip)
		fmt.Fprintln(os.Stderr, "redisstore: skipping the tests that need Redis:", skipReason)
	}
	code := m.Run()
	if srv != nil {
		srv.stop()
	}
	os.Exit(code)
}

// needRedis returns the shared Redis address, or skips (fails under CI=true).
func needRedis(tb testing.TB) string {
	tb.Helper()
	if testAddr == "" {
		unavailableRedis(tb, skipReason)
	}
	return testAddr
}

func unavailableRedis(tb testing.TB, why string) {
	tb.Helper()
	msg := "no Redis server for this test: " + why +
		" (install redis-server on PATH, or set " + envRedis + "=host:port)"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// redisServer is a redis-server process started by the tests.
type redisServer struct {
	addr string
	port int
	cmd  *exec.Cmd
}

// startRedis starts redis-server on port (0: a free one) on loopback.
func startRedis(port int) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH")
	}
	return startRedisOn(bin, port)
}

// startRedisWith starts bin on a free loopback port with extra arguments.
func startRedisWith(bin string, extra ...string) (*redisServer, error) {
	return startRedisOn(bin, 0, extra...)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startRedisOn(bin string, port int, extra ...string) (*redisServer, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	cmd.Args = append(cmd.Args, extra...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), port: port, cmd: cmd}
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer: %w", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the server (SIGKILL: no chance to save anything).
func (s *redisServer) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

func newClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	// Generous socket timeouts: under -race with other packages' tests
	// running beside it, one script can queue for over a second (a CI run
	// failed TestNoLostWakeups on a 1 s ReadTimeout). Tests that need a
	// dead Redis noticed quickly bound their calls with Options.Timeout,
	// which reaches go-redis as a context deadline.
	c := redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  time.Second,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		MaxRetries:   -1,
		PoolSize:     64,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func randomPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "test-" + hex.EncodeToString(b[:])
}

// newStore returns a Store with a fresh prefix on addr, closed at the end.
func newStore(tb testing.TB, addr string, opt redisstore.Options) *redisstore.Store {
	tb.Helper()
	if opt.Prefix == "" {
		opt.Prefix = randomPrefix()
	}
	if opt.Timeout == 0 {
		// Not the 2 s default: on a loaded CI machine under -race a call can
		// take longer, and a healthy Redis must not look unavailable here.
		// Fault tests set their own, shorter Timeout.
		opt.Timeout = 10 * time.Second
	}
	s, err := redisstore.New(newClient(tb, addr), opt)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// eventually polls cond until it holds or a generous bound passes: the
// bound is only there to end a broken test, it measures nothing.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, o := range []redisstore.Options{
		{Prefix: "a{b"},
		{Lease: -1},
		{Unavailable: redisstore.Degrade},
		{Unavailable: 7},
		{Lease: time.Second, RenewEvery: 2 * time.Second},
		{Processes: -1},
	} {
		_, err := redisstore.New(c, o)
		require.ErrorIs(t, err, redisstore.ErrInvalidOptions, "%+v", o)
	}
	_, err := redisstore.New(nil, redisstore.Options{})
	require.True(t, errors.Is(err, redisstore.ErrInvalidOptions))
}

func TestClose(t *testing.T) {
	addr := needRedis(t)
	st := newStore(t, addr, redisstore.Options{})
	g, err := governor.New(governor.Config{Store: st, Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}})
	require.NoError(t, err)
	p, err := g.Acquire(context.Background(), "k")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := g.Acquire(context.Background(), "k")
		done <- err
	}()
	eventually(t, "the second Acquire waits", func() bool {
		ks, err := st.Snapshot(context.Background(), time.Now())
		return err == nil && len(ks) == 1 && ks[0].Waiting == 1
	})
	require.NoError(t, st.Close())
	require.ErrorIs(t, <-done, redisstore.ErrClosed)
	p.Release() // still works
	ks, err := st.Snapshot(context.Background(), time.Now())
	require.NoError(t, err)
	require.Equal(t, 0, ks[0].InFlight)
	require.NoError(t, st.Close())
}
