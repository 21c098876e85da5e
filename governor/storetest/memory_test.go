package storetest_test

import (
	"testing"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/storetest"
)

// The in-memory store is the reference implementation of the contract.
func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) governor.Store { return governor.NewMemoryStore(0) })
}
