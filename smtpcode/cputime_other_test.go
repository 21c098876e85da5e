//go:build !linux

package smtpcode

import "time"

func threadCPUTime() (time.Duration, bool) { return 0, false }
