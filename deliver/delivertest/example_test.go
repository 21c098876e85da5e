package delivertest_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/sluicemail/sluice/deliver/delivertest"
)

// describe renders a client error as the reply it carries.
func describe(err error) string {
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return "accepted"
	case errors.As(err, &se):
		ec := se.EnhancedCode
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, ec[0], ec[1], ec[2], se.Message)
	}
	return err.Error()
}

// A Gmail-like receiver takes two connections per sending IP and refuses
// the third at the greeting with 421 4.4.5. A second sending IP (a client
// bound to 127.0.0.2) has its own budget.
func ExampleGmail() {
	srv, err := delivertest.NewServer(delivertest.Gmail())
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	for i := 1; i <= 3; i++ {
		c, err := srv.Client("127.0.0.1")
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		fmt.Printf("127.0.0.1, connection %d: %s\n", i, describe(c.Hello("sender.example")))
	}
	c, err := srv.Client("127.0.0.2")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Printf("127.0.0.2, connection 1: %s\n", describe(c.Hello("sender.example")))
	fmt.Println("most connections 127.0.0.1 held at once:", srv.MaxConcurrency("127.0.0.1"))
	// Output:
	// 127.0.0.1, connection 1: accepted
	// 127.0.0.1, connection 2: accepted
	// 127.0.0.1, connection 3: 421 4.4.5 Server busy, try again later. - gsmtp
	// 127.0.0.2, connection 1: accepted
	// most connections 127.0.0.1 held at once: 3
}

// Greylisting refuses the first attempt of a (sending IP, sender, recipient)
// triple, and every retry until the delay has passed. Real receivers want
// minutes: a test runs them in fake time with NewPipeServer inside
// testing/synctest; this example waits a few real milliseconds.
func ExampleGreylist() {
	srv, err := delivertest.NewServer(delivertest.Config{
		Greylist: delivertest.Greylist{Delay: 20 * time.Millisecond},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	send := func() string {
		c, err := srv.Client("127.0.0.1")
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		if err := c.SendMail("a@example.org", []string{"b@example.com"}, strings.NewReader("Subject: hi\r\n\r\nhi\r\n")); err != nil {
			return describe(err)
		}
		return describe(c.Quit())
	}
	fmt.Println("first attempt:", send())
	fmt.Println("retry at once:", send())
	time.Sleep(20 * time.Millisecond)
	fmt.Println("retry after the delay:", send())
	fmt.Println("messages received:", srv.MessageCount())
	// Output:
	// first attempt: 451 4.7.1 Greylisting in action, please come back later
	// retry at once: 451 4.7.1 Greylisting in action, please come back later
	// retry after the delay: accepted
	// messages received: 1
}

// Faults script misbehaviour: here the first connection is dropped after
// the final dot, before the reply, so the sender cannot know the message
// arrived; the record can.
func ExampleFault() {
	srv, err := delivertest.NewServer(delivertest.Config{
		Faults: []delivertest.Fault{{Step: delivertest.StepDot, Action: delivertest.ActionDrop, Times: 1}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	c, err := srv.Client("127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	err = c.SendMail("a@example.org", []string{"b@example.com"}, strings.NewReader("Subject: hi\r\n\r\nhi\r\n"))
	c.Close()
	fmt.Println("client saw an SMTP reply:", errors.As(err, new(*smtp.SMTPError)))
	m := srv.Messages()[0]
	fmt.Println("receiver got it:", m.To, "dropped before replying:", m.Dropped)
	// Output:
	// client saw an SMTP reply: false
	// receiver got it: [b@example.com] dropped before replying: true
}

// A Dialer routes by address among in-memory receivers, so one dial hook
// serves a sender that talks to several of them, and passes the sending IP
// the receivers key their limits by. (Inside testing/synctest the same code
// runs in fake time.)
func ExampleDialer() {
	gmail, err := delivertest.NewPipeServer(delivertest.Config{Addr: "mx.gmail.example:25"})
	if err != nil {
		log.Fatal(err)
	}
	defer gmail.Close()
	yahoo, err := delivertest.NewPipeServer(delivertest.Config{Addr: "mta.yahoo.example:25"})
	if err != nil {
		log.Fatal(err)
	}
	defer yahoo.Close()

	dial := delivertest.Dialer{Identity: "192.0.2.10"}.DialContext
	for _, addr := range []string{"mx.gmail.example:25", "mta.yahoo.example:25", "mta.yahoo.example:25"} {
		conn, err := dial(context.Background(), "tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		c := smtp.NewClient(conn)
		if err := c.SendMail("a@example.org", []string{"b@example.com"}, strings.NewReader("Subject: hi\r\n\r\nhi\r\n")); err != nil {
			log.Fatal(err)
		}
		c.Quit()
	}
	gmail.WaitIdle(context.Background())
	yahoo.WaitIdle(context.Background())
	fmt.Println("gmail:", gmail.MessageCount(), "from", gmail.ClientNames())
	fmt.Println("yahoo:", yahoo.MessageCount(), "from", yahoo.ClientNames())
	// Output:
	// gmail: 1 from [192.0.2.10]
	// yahoo: 2 from [192.0.2.10]
}
