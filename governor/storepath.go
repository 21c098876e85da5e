package governor

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// storePoll is how often a waiter with neither a Wake channel nor a
// RetryAt retries against a Store.
const storePoll = time.Second

// storeRecheck bounds every other wait on a Store: a waiter given a Wake
// channel, or a RetryAt further ahead, still Reserves again at least this
// often, so that a wake-up the store lost (a dropped pub/sub message), or a
// Resume that a store without Wake channels cannot announce, delays a caller
// by at most this much instead of forever. One Reserve per waiter per
// storeRecheck is cheap next to the wait; the in-memory path has no such
// timer (its wake-ups cannot be lost).
const storeRecheck = 5 * time.Second

func storeErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrStore, err)
}

// storeRun runs one request against g.store. It returns the Request of a
// granted request (for a KindSlot, its Ticket holds the slots); when gout is
// not nil it receives the Grant, for a later Store.Cancel.
func (g *Governor) storeRun(ctx context.Context, kind Kind, keys []string, try bool, gout *Grant) (Decision, *Request, error) {
	for _, k := range keys {
		if k == "" {
			return Decision{}, nil, ErrInvalidKey
		}
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	now := g.now()
	if len(sorted) == 0 {
		return Decision{OK: true, Start: now}, nil, nil
	}
	req := &Request{Kind: kind, Keys: sorted, Limits: make([]Limits, len(sorted)), Try: try, Ticket: g.newTicket()}
	if !try {
		if err := ctx.Err(); err != nil {
			return Decision{}, nil, &WaitError{Err: err}
		}
		req.Deadline = ctxDeadline(ctx)
	}
	first := now
	queued := false
	var held Decision // the last limit that held the call up
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// bg runs the clean-up calls even when ctx is done.
	bg := context.WithoutCancel(ctx)
	for {
		cp := g.policy.Load()
		for i, k := range sorted {
			req.Limits[i] = cp.lookup(k).raw
		}
		req.Now = now
		gr, err := g.store.Reserve(ctx, req)
		if err != nil {
			if queued {
				g.reportStoreError(g.store.Cancel(bg, req, Grant{}))
			}
			return Decision{}, nil, storeErr(err)
		}
		if gr.OK {
			d := Decision{OK: true, Start: gr.Start, Key: gr.Decision.Key, Limit: gr.Decision.Limit}
			if d.Limit == LimitNone && queued {
				d.Key, d.Limit, d.Reason = held.Key, held.Limit, held.Reason
			}
			start := gr.Start
			if kind == KindEvent && !try {
				var jmax time.Duration
				var jkey string
				for i, l := range req.Limits {
					if l.Jitter > jmax {
						jmax, jkey = l.Jitter, sorted[i]
					}
				}
				if jmax > 0 {
					j := time.Duration(g.draw(int64(jmax)))
					if !req.Deadline.IsZero() && start.Add(j).After(req.Deadline) {
						j = max(req.Deadline.Sub(start), 0)
					}
					if j > start.Sub(now) {
						d.Key, d.Limit = jkey, LimitJitter
					}
					start = start.Add(j)
					d.Start = start
				}
			}
			if wait := start.Sub(g.now()); wait > 0 {
				if err := sleepCtx(ctx, &timer, wait); err != nil {
					req.Now = g.now()
					g.reportStoreError(g.store.Cancel(bg, req, gr))
					d.OK, d.RetryAt = false, start
					return d, nil, &WaitError{Decision: d, Err: err}
				}
			}
			if queued || start.After(first) {
				d.Waited = g.now().Sub(first)
			}
			if gout != nil {
				*gout = gr
			}
			return d, req, nil
		}
		d := gr.Decision
		d.OK = false
		if try {
			return d, nil, nil
		}
		queued = true
		held = d
		if !d.RetryAt.IsZero() && !req.Deadline.IsZero() && d.RetryAt.After(req.Deadline) {
			req.Now = g.now()
			g.reportStoreError(g.store.Cancel(bg, req, Grant{}))
			return d, nil, &WaitError{Decision: d, Err: context.DeadlineExceeded}
		}
		wait := storePoll
		if !d.RetryAt.IsZero() {
			wait = min(max(d.RetryAt.Sub(now), 0), storeRecheck)
		} else if gr.Wake != nil {
			wait = storeRecheck // a safety net: Wake should come first
		}
		resetTimer(&timer, wait)
		select {
		case <-gr.Wake:
		case <-timer.C:
		case <-cp.replaced: // SetPolicy: Reserve again with the new Limits
		case <-ctx.Done():
			req.Now = g.now()
			g.reportStoreError(g.store.Cancel(bg, req, Grant{}))
			return d, nil, &WaitError{Decision: d, Err: ctx.Err()}
		}
		now = g.now()
	}
}

// draw returns a uniform random int64 in [0, n).
func (g *Governor) draw(n int64) int64 {
	g.randMu.Lock()
	r := g.rnd.Uint64()
	g.randMu.Unlock()
	return int64(float64(r>>11) / (1 << 53) * float64(n))
}
