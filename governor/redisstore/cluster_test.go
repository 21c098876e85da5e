package redisstore_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
	"github.com/sluicemail/sluice/governor/storetest"
)

// startCluster starts a three-master Redis Cluster on loopback.
func startCluster(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailableRedis(t, "redis-server not found on PATH")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		unavailableRedis(t, "redis-cli not found on PATH (needed to create a cluster)")
	}
	var addrs []string
	for range 3 {
		// the bus port would be port+10000, maybe past 65535: choose it
		bus, err := freePort()
		require.NoError(t, err)
		srv, err := startRedisWith(bin, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", t.TempDir()+"/nodes.conf")
		require.NoError(t, err)
		t.Cleanup(srv.stop)
		addrs = append(addrs, srv.addr)
	}
	out, err := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		eventually(t, "the cluster is up on "+a, func() bool {
			info, err := c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		_ = c.Close()
	}
	return addrs
}

// On Redis Cluster every key of a store shares its Prefix's slot: the
// conformance suite and cross-store wake-ups pass on a ClusterClient.
func TestCluster(t *testing.T) {
	addrs := startCluster(t)
	newCluster := func(t *testing.T) *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	newStoreOn := func(t *testing.T, prefix string) *redisstore.Store {
		st, err := redisstore.New(newCluster(t), redisstore.Options{Prefix: prefix})
		require.NoError(t, err)
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	storetest.Run(t, func(t *testing.T) governor.Store { return newStoreOn(t, randomPrefix()) })

	// stores in different slots, and waiters woken across stores
	for i := range 4 {
		prefix := "cluster-" + strconv.Itoa(i) + "-" + randomPrefix()
		pol := &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}
		ga, err := governor.New(governor.Config{Store: newStoreOn(t, prefix), Policy: pol})
		require.NoError(t, err)
		gb, err := governor.New(governor.Config{Store: newStoreOn(t, prefix), Policy: pol})
		require.NoError(t, err)
		p, err := ga.Acquire(context.Background(), "ip:1", "site:gmail", "ip:1|site:gmail")
		require.NoError(t, err)
		got := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			q, err := gb.Acquire(ctx, "site:gmail", "ip:1")
			q.Release()
			got <- err
		}()
		time.Sleep(10 * time.Millisecond) // let it queue (either order is correct)
		p.Release()
		require.NoError(t, <-got, fmt.Sprint("store ", i))
	}
}
