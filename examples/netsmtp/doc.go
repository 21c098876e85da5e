// Command netsmtp shows the two ways code written for net/smtp gets
// Sluice's validation, governor, deadlines and reply classification
// without being rewritten:
//
//   - Sender.SendNetSMTP sends a message through a *net/smtp.Client you
//     already hold (your dialling, your EHLO, your AUTH);
//   - deliver.SendMail is a drop-in for net/smtp.SendMail, with the same
//     signature.
//
// Both talk to an in-process receiver on 127.0.0.1 (deliver/delivertest):
//
//	go run ./examples/netsmtp
package main
