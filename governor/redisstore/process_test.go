package redisstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
)

// Several OS processes (this test binary re-executed with envChild set)
// share one Redis. The child roles are tests that skip unless envChild
// names them.

const (
	envPrefix = "SLUICE_REDISSTORE_PREFIX"
	envOut    = "SLUICE_REDISSTORE_OUT"
	envRounds = "SLUICE_REDISSTORE_ROUNDS"
	envLease  = "SLUICE_REDISSTORE_LEASE"
)

// child starts this test binary running only the test named role.
func child(t *testing.T, role, addr, prefix string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+role+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChild+"="+role, envRedis+"="+addr, envPrefix+"="+prefix)
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stderr = os.Stderr
	return cmd
}

func childGovernor(t *testing.T, lease time.Duration, max int) (*governor.Governor, *redisstore.Store) {
	t.Helper()
	st := newStore(t, os.Getenv(envRedis), redisstore.Options{Prefix: os.Getenv(envPrefix), Lease: lease})
	g, err := governor.New(governor.Config{
		Store:  st,
		Policy: &governor.Policy{Keys: map[string]governor.Limits{"ip:192.0.2.1": {MaxConcurrency: max}}},
	})
	require.NoError(t, err)
	return g, st
}

// TestChildHolder is a child: it acquires the shared key's slot Rounds
// times, holding it a little, and writes each held interval (Unix ns,
// measured strictly inside the hold) to envOut.
func TestChildHolder(t *testing.T) {
	if os.Getenv(envChild) != "TestChildHolder" {
		t.Skip("child role of TestMultiProcessSharedSlots")
	}
	g, _ := childGovernor(t, 5*time.Second, 2)
	rounds, err := strconv.Atoi(os.Getenv(envRounds))
	require.NoError(t, err)
	f, err := os.Create(os.Getenv(envOut))
	require.NoError(t, err)
	defer f.Close()
	w := bufio.NewWriter(f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range rounds {
		p, err := g.Acquire(ctx, "ip:192.0.2.1")
		require.NoError(t, err)
		from := time.Now().UnixNano()
		time.Sleep(time.Millisecond) // the "work": not a timing assertion
		to := time.Now().UnixNano()
		p.Release()
		fmt.Fprintf(w, "%d %d\n", from, to)
	}
	require.NoError(t, w.Flush())
}

func TestMultiProcessSharedSlots(t *testing.T) {
	addr := needRedis(t)
	if testing.Short() {
		t.Skip("spawns processes")
	}
	const procs, rounds = 4, 40
	prefix := randomPrefix()
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for i := range procs {
		out := filepath.Join(dir, "p"+strconv.Itoa(i))
		cmd := child(t, "TestChildHolder", addr, prefix, envOut+"="+out, envRounds+"="+strconv.Itoa(rounds))
		require.NoError(t, cmd.Start())
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		require.NoError(t, c.Wait())
	}
	type ev struct {
		at    int64
		delta int
	}
	var evs []ev
	for i := range procs {
		b, err := os.ReadFile(filepath.Join(dir, "p"+strconv.Itoa(i)))
		require.NoError(t, err)
		lines := strings.Fields(string(b))
		require.Len(t, lines, 2*rounds, "process %d", i)
		for j := 0; j < len(lines); j += 2 {
			from, _ := strconv.ParseInt(lines[j], 10, 64)
			to, _ := strconv.ParseInt(lines[j+1], 10, 64)
			require.LessOrEqual(t, from, to)
			evs = append(evs, ev{from, +1}, ev{to, -1})
		}
	}
	// ends before starts at the same instant: touching intervals do not overlap
	slices.SortFunc(evs, func(a, b ev) int {
		if a.at != b.at {
			return int(min(max(a.at-b.at, -1), 1))
		}
		return a.delta - b.delta
	})
	cur, peak := 0, 0
	for _, e := range evs {
		cur += e.delta
		peak = max(peak, cur)
	}
	t.Logf("%d processes x %d holds: at most %d held at once", procs, rounds, peak)
	require.LessOrEqual(t, peak, 2)
	require.Equal(t, 0, cur)

	// nothing is left held
	st := newStore(t, addr, redisstore.Options{Prefix: prefix})
	ks, err := st.Snapshot(context.Background(), time.Now())
	require.NoError(t, err)
	for _, k := range ks {
		require.Equal(t, 0, k.InFlight, k.Key)
		require.Equal(t, 0, k.Waiting, k.Key)
	}
}

// TestChildCrash is a child: it takes the only slot, says so on stdout and
// blocks until killed, never releasing.
func TestChildCrash(t *testing.T) {
	if os.Getenv(envChild) != "TestChildCrash" {
		t.Skip("child role of TestCrashedHolderSlotReturns")
	}
	lease, err := time.ParseDuration(os.Getenv(envLease))
	require.NoError(t, err)
	g, _ := childGovernor(t, lease, 1)
	_, err = g.Acquire(context.Background(), "ip:192.0.2.1")
	require.NoError(t, err)
	fmt.Println("HELD")
	select {}
}

func TestCrashedHolderSlotReturns(t *testing.T) {
	addr := needRedis(t)
	if testing.Short() {
		t.Skip("spawns processes")
	}
	prefix := randomPrefix()
	const lease = 300 * time.Millisecond
	cmd := child(t, "TestChildCrash", addr, prefix, envLease+"="+lease.String())
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HELD\n", line)

	st := newStore(t, addr, redisstore.Options{Prefix: prefix, Lease: lease})
	g, err := governor.New(governor.Config{
		Store:  st,
		Policy: &governor.Policy{Keys: map[string]governor.Limits{"ip:192.0.2.1": {MaxConcurrency: 1}}},
	})
	require.NoError(t, err)
	// while the child lives, its lease is renewed: the slot stays taken
	_, d, err := g.TryAcquire("ip:192.0.2.1")
	require.NoError(t, err)
	require.False(t, d.OK)
	require.Equal(t, governor.LimitConcurrency, d.Limit)

	// kill it without a release; a blocked Acquire gets the slot after the
	// lease (the bound is generous: it only ends a broken test)
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := g.Acquire(ctx, "ip:192.0.2.1")
	require.NoError(t, err)
	p.Release()
	ks, err := st.Snapshot(context.Background(), time.Now())
	require.NoError(t, err)
	require.Len(t, ks, 1)
	require.Equal(t, 0, ks[0].InFlight)
}
