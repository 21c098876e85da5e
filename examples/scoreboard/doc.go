// Command scoreboard measures how well deliver keeps a sender under a
// receiver's limits, and what it costs, in three scenarios:
//
//  1. Postfix's own experiment (SCHEDULER_README, "concurrency feedback"):
//     a receiver that takes 5 connections and answers 421 to the next
//     one, a sender allowed 20, 2,000 messages, a latency on every command.
//     Postfix deferred 16.5% of its deliveries with its best feedback
//     setting (49.7% with +/-1 per delivery), at a mean concurrency of
//     5.2-5.7.
//  2. Gmail: 2 connections per sending IP (421 4.4.5 beyond), a sender
//     that starts at 10.
//  3. Throughput to an accept-everything receiver over loopback TCP, with
//     connection reuse, against a bare go-smtp client loop doing the same
//     work in the same run.
//
// For 1 and 2 it prints the share of throttling replies per message (goal:
// under 2%), the mean concurrency the receiver saw (time-weighted, from its
// record of connections; goal: 90% to 100% of its cap) and the completion
// time against the optimum, n / (cap x the throughput of one connection)
// measured in the same run (goal: within 115%). For 3, the throughput
// ratio (goal: at least 0.9), twice: deliver as configured by default
// (it pipelines MAIL, RCPT and DATA, RFC 2920, since the receiver offers
// PIPELINING; go-smtp's client cannot), and deliver with
// DisablePipelining, one command per round trip like go-smtp, which shows
// what the library's own work costs.
//
// Scenarios 1 and 2 run in real time over in-memory connections
// (delivertest's net.Pipe listener) with 10 ms per command, about a minute
// in all; 3 runs over 127.0.0.1. Nothing leaves the machine.
//
//	go run ./examples/scoreboard
//
// Flags: -n (messages per congestion scenario, 2000), -latency (per
// command in scenarios 1 and 2, 10ms), -tcp-n (messages per round in
// scenario 3, 5000), -rounds (rounds of each side in scenario 3, taken in
// turn; the best of each side is kept, 5), -only (run one scenario: 1, 2
// or 3; all by default).
//
// Scenario 3 is CPU-bound on loopback: on a loaded machine its ratio is
// the ratio of CPU spent per message by deliver and by go-smtp alone.
package main
