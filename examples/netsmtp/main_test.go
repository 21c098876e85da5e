package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	srv, err := newReceiver()
	require.NoError(t, err)
	defer srv.Close()

	var out bytes.Buffer
	require.NoError(t, run(t.Context(), srv, &out))
	require.NoError(t, srv.WaitIdle(t.Context()))
	t.Log("\n" + out.String())

	// alice+bob, carol, dave, erin: four messages; nothing for gone or eve.
	assert.Equal(t, 4, srv.MessageCount())
	for _, rcpt := range []string{"alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test", "erin@example.test"} {
		assert.Len(t, srv.Received(rcpt), 1, rcpt)
	}
	assert.Empty(t, srv.Received("gone@example.test"))
	for _, m := range srv.Messages() {
		assert.NotContains(t, m.To, "x@evil.test")
		// Bare LFs went out as CRLF.
		assert.Equal(t, "From: app@example.org\r\nSubject: net/smtp, with a governor\r\n\r\nHello.\r\n", string(m.Data))
	}

	s := out.String()
	assert.Contains(t, s, "gone@example.test    bounced   550 5.2.1")
	assert.Contains(t, s, "ErrInvalidAddress: true")
	assert.Contains(t, s, "to dave: err = <nil>")
	assert.Contains(t, s, "smtpcode.FromError: 550 5.2.1")
}
