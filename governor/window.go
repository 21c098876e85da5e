package governor

import "time"

// Open reports whether the window is open at now (NextOpen(now) is now). A
// window that never opens (Start 24h with End 0, or Days naming no valid
// weekday) is closed, as the Governor treats it: its keys wait, with no
// RetryAt, until a new policy opens them.
func (w Window) Open(now time.Time) bool {
	from, _ := w.interval(now)
	return !from.IsZero() && !from.After(now)
}

// NextOpen returns now if the window is open at now, else the time it opens
// next. A window that never opens returns the zero time.
func (w Window) NextOpen(now time.Time) time.Time {
	from, _ := w.interval(now)
	if from.After(now) {
		return from
	}
	if from.IsZero() {
		return time.Time{}
	}
	return now
}

// always reports whether the window never closes.
func (w Window) always() bool { return w.Start == w.End && len(w.Days) == 0 }

// interval returns the open interval [from, to) that contains now, or else
// the next one. With an always-open window it returns (now, zero).
func (w Window) interval(now time.Time) (from, to time.Time) {
	if w.always() {
		return now, time.Time{}
	}
	loc := w.Location
	if loc == nil {
		loc = time.UTC
	}
	local := now.In(loc)
	y, m, d := local.Date()
	full := w.Start == w.End // open all day on the listed days
	for i := -1; i <= 8; i++ {
		day := time.Date(y, m, d+i, 0, 0, 0, 0, loc)
		if !w.onDay(day.Weekday()) {
			continue
		}
		start := atOffset(y, m, d+i, w.Start, loc)
		var end time.Time
		switch {
		case full:
			end = time.Date(y, m, d+i+1, 0, 0, 0, 0, loc)
		case w.End > w.Start:
			end = atOffset(y, m, d+i, w.End, loc)
		default: // wraps past midnight
			end = atOffset(y, m, d+i+1, w.End, loc)
		}
		if end.After(now) && end.After(start) {
			return start, end
		}
	}
	return time.Time{}, time.Time{}
}

func (w Window) onDay(d time.Weekday) bool {
	if len(w.Days) == 0 {
		return true
	}
	for _, x := range w.Days {
		if x == d {
			return true
		}
	}
	return false
}

// atOffset is the wall-clock time off after midnight of the given day in loc
// (09:00 stays 09:00 on daylight-saving days).
func atOffset(y int, m time.Month, d int, off time.Duration, loc *time.Location) time.Time {
	h := int(off / time.Hour)
	off -= time.Duration(h) * time.Hour
	mi := int(off / time.Minute)
	off -= time.Duration(mi) * time.Minute
	s := int(off / time.Second)
	off -= time.Duration(s) * time.Second
	return time.Date(y, m, d, h, mi, s, int(off), loc)
}

// Period returns the calendar period of the quota that contains now:
// [start, end). For a Rolling quota it returns (now-Window, now).
func (q Quota) Period(now time.Time) (start, end time.Time) {
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	l := now.In(loc)
	y, m, d := l.Date()
	switch q.Calendar {
	case Hour:
		// Subtract the time into the local hour rather than rebuild the hour
		// with time.Date, which is ambiguous in the repeated hour of a
		// daylight-saving fall-back.
		into := time.Duration(l.Minute())*time.Minute + time.Duration(l.Second())*time.Second + time.Duration(l.Nanosecond())
		start = now.Add(-into)
		end = start.Add(time.Hour)
	case Day:
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case Week:
		back := (int(l.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, m, d-back, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d-back+7, 0, 0, 0, 0, loc)
	case Month:
		start = time.Date(y, m, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	default:
		return now.Add(-q.Window), now
	}
	return start, end
}
