package governor

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Reservation is an event taken by TakeReservation that can be given back,
// in the manner of golang.org/x/time/rate's Reservation: when the event
// then does not happen (a message whose every recipient was deferred),
// Cancel returns what it took, so that retrying it does not spend the keys'
// limits twice.
//
// Cancel gives back, on every key of the event, with the key's limits in
// force at the Cancel (they may have changed since, by SetPolicy):
//
//   - its Rate token: the bucket's theoretical arrival time moves back by
//     one emission interval, never before the time of the Cancel (a token
//     whose time has passed has refilled anyway, as with rate.Reservation);
//   - its rolling-quota unit (Quota.Calendar Rolling), the one stamped at
//     the event's Start, if it is still in the window;
//   - its calendar-quota unit (Hour, Day, Week, Month), only if the period it
//     was counted in is still the current one at the time of the Cancel: a
//     unit of yesterday is not refunded into today's count.
//
// Waiters blocked on those keys are woken to look again. A Cancel gives back
// once: further Cancels do nothing and return nil. The Reservation of a
// TakeReservation that failed or was refused (its Decision is not OK), and
// the nil *Reservation, hold nothing: Cancel returns nil. Jitter is not
// given back (it was waited), nor a suspension, window or queue position.
//
// With a Config.Store, Cancel calls Store.Cancel with the request's Request
// and the Grant that Store.Reserve returned (see contract point 6); its
// error, wrapped with ErrStore, is what Cancel returns. Without one it never
// fails.
//
// A Reservation is safe for concurrent use: concurrent Cancels give back
// once, and every Cancel returns after the giving back is done.
type Reservation struct {
	g   *Governor
	dec Decision

	mu   sync.Mutex
	done bool // cancelled, or nothing to give back

	// in memory
	keys []string // sorted, distinct
	tk   taken

	// with a Store
	req   *Request
	grant Grant
}

// TakeReservation is Take, returning a Reservation that can give back what
// was taken (Reservation.Cancel) when the event then does not happen. It
// waits, honours ctx and fails exactly as Take does; it always returns a
// non-nil Reservation, whose Decision is what Take would have returned.
// When err is not nil nothing is held, and Cancel does nothing.
//
// It allocates the Reservation; Take does not allocate.
func (g *Governor) TakeReservation(ctx context.Context, keys ...string) (*Reservation, error) {
	r := &Reservation{g: g, done: true}
	if g.store != nil {
		d, req, err := g.storeRun(ctx, KindEvent, keys, false, &r.grant)
		r.dec = d
		if err == nil && d.OK && req != nil && r.grant.OK {
			r.req, r.done = req, false
		}
		return r, err
	}
	var b batch
	if err := b.prepare(keys); err != nil {
		return r, err
	}
	d, err := g.memRun(ctx, &b, KindEvent, false, &r.tk)
	r.dec = d
	if err == nil && d.OK {
		if ks := b.keys(); len(ks) > 0 {
			r.keys, r.done = slices.Clone(ks), false
		}
	}
	return r, err
}

// Decision returns the Decision of the TakeReservation (as Take returns
// it). The zero Decision for the nil Reservation.
func (r *Reservation) Decision() Decision {
	if r == nil {
		return Decision{}
	}
	return r.dec
}

// Cancel is CancelAt(time.Now()).
func (r *Reservation) Cancel() error {
	if r == nil {
		return nil
	}
	return r.CancelAt(r.g.now())
}

// CancelAt gives back what the reservation took as of now (see
// Reservation), once: a second call, or a call on a Reservation that holds
// nothing, does nothing and returns nil. It is safe for concurrent use. With
// a Config.Store it fails only when the store does (an error wrapping
// ErrStore); the Reservation is then spent all the same.
func (r *Reservation) CancelAt(now time.Time) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil
	}
	r.done = true
	g := r.g
	if r.req != nil {
		r.req.Now = now
		return storeErr(g.store.Cancel(context.Background(), r.req, r.grant))
	}
	en := g.mem
	t := en.tick(now)
	cp := g.policy.Load()
	var b batch
	b.setKeys(r.keys) // sorted and distinct already
	b.resolve(en, cp, t)
	ents := b.ents()
	for _, e := range ents {
		e.limits(cp) // SetPolicy since the Take: give back under the limits in force
	}
	en.undo(ents, KindEvent, r.tk.commit, r.tk.start, t)
	b.unlock(en)
	return nil
}
