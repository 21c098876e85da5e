package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	netsmtp "net/smtp"
	"os"

	"github.com/sluicemail/sluice/deliver"
	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/smtpcode"
)

const from = "app@example.org"

var body = []byte("From: app@example.org\nSubject: net/smtp, with a governor\n\nHello.\n")

// newReceiver starts a receiver on loopback TCP that knows one mailbox is
// gone, as Gmail says it.
func newReceiver() (*delivertest.Server, error) {
	return delivertest.NewServer(delivertest.Config{
		Recipients: map[string]delivertest.Reply{
			"gone@example.test": delivertest.GmailUnknownUserReply,
		},
	})
}

// run sends through both adapters to srv and writes what happened to w.
func run(ctx context.Context, srv *delivertest.Server, w io.Writer) error {
	host, _, err := net.SplitHostPort(srv.Addr())
	if err != nil {
		return err
	}

	// 1. An existing net/smtp client: dial and greet as you always did...
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		return err
	}
	c, err := netsmtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("app.example.org"); err != nil {
		return err
	}

	// ...then hand each message to a Sender instead of calling c.Mail,
	// c.Rcpt and c.Data yourself. One Sender per process: it holds the
	// governor (DefaultPolicy here) shared by every send.
	s, err := deliver.New(deliver.Config{HelloName: "app.example.org"})
	if err != nil {
		return err
	}
	defer s.Close(ctx)

	fmt.Fprintln(w, "SendNetSMTP over an existing *net/smtp.Client:")
	for _, to := range [][]string{
		{"alice@example.test", "bob@example.test"},
		{"gone@example.test"},
		{"carol@example.test"},
	} {
		res, err := s.SendNetSMTP(ctx, c, host, &deliver.Message{From: from, To: to, Data: body})
		if err != nil { // invalid input: nothing was sent
			return err
		}
		for _, r := range res {
			printResult(w, r)
		}
	}
	// Invalid input is refused before any byte goes on the wire.
	_, err = s.SendNetSMTP(ctx, c, host, &deliver.Message{From: from, To: []string{"eve@example.test>\r\nRCPT TO:<x@evil.test"}, Data: body})
	fmt.Fprintf(w, "  smuggled address refused: %v (ErrInvalidAddress: %t)\n", err, errors.Is(err, deliver.ErrInvalidAddress))

	// A failed transaction was reset (RSET), so c was usable all along.
	if err := c.Quit(); err != nil {
		return err
	}

	// 2. deliver.SendMail, with net/smtp.SendMail's signature.
	fmt.Fprintln(w, "\ndeliver.SendMail, a drop-in for net/smtp.SendMail:")
	err = deliver.SendMail(srv.Addr(), nil, from, []string{"dave@example.test"}, body)
	fmt.Fprintf(w, "  to dave: err = %v\n", err)
	err = deliver.SendMail(srv.Addr(), nil, from, []string{"erin@example.test", "gone@example.test"}, body)
	fmt.Fprintf(w, "  to erin and gone: err = %v\n", err)
	// The error says, per recipient, what happened; smtpcode reads the reply.
	var se *deliver.SendError
	if errors.As(err, &se) {
		for _, r := range se.Results {
			printResult(w, r)
		}
	}
	if reply, ok := smtpcode.FromError(err); ok {
		fmt.Fprintf(w, "  smtpcode.FromError: %s\n", reply)
	}
	return nil
}

func printResult(w io.Writer, r deliver.Result) {
	fmt.Fprintf(w, "  %-20s %-9s", r.Recipient, r.Status)
	if r.Status != deliver.Delivered {
		fmt.Fprintf(w, " %s (%s, %s)", r.Reply, r.Class.Category, map[bool]string{true: "transient", false: "permanent"}[r.Class.Transient])
	}
	fmt.Fprintln(w)
}

func main() {
	srv, err := newReceiver()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netsmtp:", err)
		os.Exit(1)
	}
	err = run(context.Background(), srv, os.Stdout)
	srv.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netsmtp:", err)
		os.Exit(1)
	}
	fmt.Printf("\nthe receiver took in %d messages\n", srv.MessageCount())
}
