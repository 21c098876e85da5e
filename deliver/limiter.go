package deliver

import (
	"context"
	"errors"

	"github.com/sluicemail/sluice/governor"
)

// errWoken: a blocked acquire gave way because a pooled connection came back.
var errWoken = errors.New("deliver: woken by a returned connection")

// errNotAttempted is the error of a recipient that Send gave up on before
// it was ever tried (transient: retry it).
var errNotAttempted = errors.New("deliver: not attempted")

// limiter is the governor as deliver uses it.
type limiter struct {
	g *governor.Governor
}

func newLimiter(cfg Config) (limiter, error) {
	if cfg.Governor != nil {
		return limiter{g: cfg.Governor}, nil
	}
	p := cfg.Policy
	if p == nil {
		p = DefaultPolicy()
	}
	g, err := governor.New(governor.Config{Policy: p})
	if err != nil {
		return limiter{}, err
	}
	return limiter{g: g}, nil
}

// acquire takes a connection slot on keys. When it has to wait, it hands
// the wait's cancel function to onWait (nil: nobody ends it early): cancelling with errWoken (an idle
// connection to reuse appeared) makes it give up with errWoken. No
// goroutine watches for that: the pool calls the function itself.
func (l limiter) acquire(ctx context.Context, keys []string, onWait func(context.CancelCauseFunc)) (permit, governor.Decision, error) {
	p, d, err := l.g.TryAcquire(keys...)
	if err != nil {
		return nil, d, err
	}
	if d.OK {
		return p, d, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if onWait != nil {
		onWait(cancel)
	}
	p, err = l.g.Acquire(ctx, keys...)
	if err != nil {
		var we *governor.WaitError
		if errors.As(err, &we) {
			d = we.Decision
		}
		if errors.Is(context.Cause(ctx), errWoken) {
			return nil, d, errWoken
		}
		return nil, d, err
	}
	return p, p.Decision(), nil
}

// take takes one message token on keys. It always uses the blocking Take,
// even when a token is free: only Take applies a policy's Jitter (TryTake
// never delays), and it costs no more when nothing has to wait.
func (l limiter) take(ctx context.Context, keys []string) (governor.Decision, error) {
	d, err := l.g.Take(ctx, keys...)
	if err != nil {
		var we *governor.WaitError
		if errors.As(err, &we) {
			d = we.Decision
		}
	}
	return d, err
}

// takeReservation is take for the caller's keys, whose unit is given back
// when the message is not sent after all (see Sender.giveBackKeys).
func (l limiter) takeReservation(ctx context.Context, keys []string) (*governor.Reservation, governor.Decision, error) {
	r, err := l.g.TakeReservation(ctx, keys...)
	d := r.Decision()
	if err != nil {
		var we *governor.WaitError
		if errors.As(err, &we) {
			d = we.Decision
		}
	}
	return r, d, err
}

func (l limiter) feedback(key string, s governor.Signal) {
	_ = l.g.Feedback(key, s)
}
