//go:build race

package smtpcode

const raceEnabled = true
