package deliver_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	netsmtp "net/smtp"
	"strings"
	"time"

	"github.com/sluicemail/sluice/deliver"
	"github.com/sluicemail/sluice/deliver/delivertest"
)

// Send a message to an in-process receiver. In production leave Routes and
// Dial unset: MX lookups and TCP from Config.SourceIP take their place.
func Example() {
	srv, err := delivertest.NewPipeServer(delivertest.Config{
		Recipients: map[string]delivertest.Reply{
			"nobody@example.com": {Code: 550, Enhanced: "5.1.1", Text: "No such user"},
			"full@example.com":   {Code: 452, Enhanced: "4.2.2", Text: "Mailbox full"},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	s, err := deliver.New(deliver.Config{
		HelloName: "mail.example.org",
		Routes:    map[string][]string{"example.com": {srv.Addr()}},
		Dial:      delivertest.Dialer{}.DialSource,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(context.Background())

	results, err := s.Send(context.Background(), &deliver.Message{
		From: "newsletter@example.org",
		To:   []string{"alice@example.com", "nobody@example.com", "full@example.com"},
		Data: []byte("From: newsletter@example.org\nSubject: Hello\n\nHi!\n"),
		Keys: []string{"mailbox:newsletter@example.org"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		switch r.Status {
		case deliver.Delivered:
			fmt.Println(r.Recipient, r.Status)
		case deliver.Deferred:
			fmt.Println(r.Recipient, r.Status, r.Reply.Enhanced, r.Class.Category, "retry later:", r.RetryAt.After(time.Now()))
		case deliver.Bounced:
			fmt.Println(r.Recipient, r.Status, r.Reply.Enhanced, r.Class.Category)
		}
	}
	// Output:
	// alice@example.com delivered
	// nobody@example.com bounced 5.1.1 unknown_user
	// full@example.com deferred 4.2.2 mailbox_full retry later: true
}

// Invalid input is refused before anything is dialled.
func ExampleSender_Send_invalid() {
	s, err := deliver.New(deliver.Config{HelloName: "mail.example.org"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(context.Background())
	_, err = s.Send(context.Background(), &deliver.Message{
		From: "a@example.org",
		To:   []string{"bob@example.com>\r\nRCPT TO:<eve@example.net"},
		Data: []byte("Subject: x\n\nx\n"),
	})
	fmt.Println(errors.Is(err, deliver.ErrInvalidAddress))
	var ae *deliver.AddressError
	if errors.As(err, &ae) {
		fmt.Println(ae.Field, ae.Reason)
	}
	// Output:
	// true
	// To[0] contains an angle bracket (give the bare address)
}

// Sites group receiving infrastructure: a Google Workspace domain shares
// Gmail's limits.
func ExampleSiteOf() {
	fmt.Println(deliver.SiteOf("acme.example", []string{"aspmx.l.google.com", "alt1.aspmx.l.google.com"}))
	fmt.Println(deliver.SiteOf("hotmail.com", []string{"hotmail-com.olc.protection.outlook.com"}))
	fmt.Println(deliver.SiteOf("example.co.uk", []string{"mx1.mail.example.co.uk"}))
	// Output:
	// google.com
	// outlook.com
	// example.co.uk
}

// The built-in policy, per source IP and site.
func ExampleDefaultPolicy() {
	p := deliver.DefaultPolicy()
	for _, key := range []string{"ip:203.0.113.7|site:google.com", "ip:203.0.113.7|site:yahoodns.net", "ip:203.0.113.7|site:example.net", "site:google.com"} {
		fmt.Println(key, p.LimitsFor(key).MaxConcurrency)
	}
	// Output:
	// ip:203.0.113.7|site:google.com 2
	// ip:203.0.113.7|site:yahoodns.net 4
	// ip:203.0.113.7|site:example.net 5
	// site:google.com 0
}

// Code that already holds a net/smtp client keeps it and gets the
// classification and the limits.
func ExampleSender_SendNetSMTP() {
	srv, err := delivertest.NewPipeServer(delivertest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	conn, err := delivertest.Dialer{}.DialContext(context.Background(), "tcp", srv.Addr())
	if err != nil {
		log.Fatal(err)
	}
	host := strings.Split(srv.Addr(), ":")[0]
	c, err := netsmtp.NewClient(conn, host)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	s, err := deliver.New(deliver.Config{HelloName: "mail.example.org"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(context.Background())
	results, err := s.SendNetSMTP(context.Background(), c, host, &deliver.Message{
		From: "a@example.org",
		To:   []string{"bob@example.com"},
		Data: []byte("Subject: x\n\nx\n"),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(results[0].Recipient, results[0].Status)
	// Output:
	// bob@example.com delivered
}
