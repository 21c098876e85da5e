// Command quickstart sends 500 messages to three receivers that run inside
// this process and prints what each of them saw. It needs no network:
//
//	go run ./examples/quickstart
//
// The receivers come from deliver/delivertest and answer like the real
// ones, after a delay of 5 ms per command:
//
//   - gmail.test refuses a third connection from one sending IP with
//     "421 4.4.5 Server busy" (Gmail's concurrency limit);
//   - yahoo.test takes 5 connections and 100 messages a second per IP;
//     beyond that it answers "421 4.7.0 [TSS04]" and keeps deferring the IP
//     for 10 s; it also closes a connection after 50 messages;
//   - example.test accepts everything.
//
// Ten goroutines call Send at once. The governor policy knows Yahoo's
// limits and stays under them, but lets every other site take 10
// connections. Gmail refuses the third one; deliver learns from the refusal
// that Gmail took 2 and opens no more than that from then on, and the
// messages that were refused go out over the 2 connections Gmail accepted.
// A production program would start from deliver.DefaultPolicy, which
// already knows Gmail's limit.
//
// It prints a progress bar on stderr, then a table on stdout: per receiver,
// the messages sent, delivered, deferred (a real program would queue them
// for their RetryAt) and bounced, the throttling replies the receiver sent,
// the most connections it saw at once, and messages per second overall.
//
// Flags: -n (messages, 500), -workers (goroutines calling Send, 10),
// -latency (the receivers' delay per command, 5ms), -maxwait (how long one
// Send may wait for a connection before deferring, 1m).
package main
