// Package policytest shows how to unit-test a throttling policy: its test
// file (policy_test.go) runs a deliver.Sender against in-memory receivers
// from deliver/delivertest inside a testing/synctest bubble, so that a day
// of fake time passes in milliseconds and every figure is exact.
//
// The recipe, in each test:
//
//  1. synctest.Test(t, func(t *testing.T) { ... }): time.Now, timers and
//     sleeps in the bubble run on a fake clock that jumps ahead whenever
//     every goroutine is blocked.
//  2. delivertest.NewPipeServer(delivertest.Gmail()) (inside the bubble):
//     a receiver that behaves like Gmail, reached over net.Pipe, since real
//     sockets are not allowed in a bubble.
//  3. deliver.New with Config.Dial set to delivertest.Dialer{}.DialSource,
//     Config.Routes sending the test domain to the receiver's Addr, and
//     Config.Policy (or Config.Governor) set to the policy under test.
//  4. Send, then assert on the Results and on what the receiver recorded
//     (MaxConcurrency, Throttled, Messages, ...). Close the Sender and the
//     receiver before the bubble ends.
//
// Run them with:
//
//	go test ./examples/policytest -v
package policytest
