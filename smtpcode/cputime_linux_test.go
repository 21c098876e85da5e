//go:build linux

package smtpcode

import (
	"syscall"
	"time"
)

// threadCPUTime returns the CPU time the calling OS thread has used
// (RUSAGE_THREAD). Benchmarks lock their goroutine to the thread and report
// it per operation, a figure that other processes on a busy machine do not
// inflate the way they inflate wall-clock ns/op.
func threadCPUTime() (time.Duration, bool) {
	const rusageThread = 1
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
