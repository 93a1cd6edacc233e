package nic

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A fleet up to the table's size fits; one past it is named, with the
// setting that makes room and a value that would.
func TestNeighborProblem(t *testing.T) {
	assert.Empty(t, neighborProblem(1024, 1024))
	p := neighborProblem(2000, 1024)
	assert.Contains(t, p, "2000 devices")
	assert.Contains(t, p, "holds 1024")
	assert.Contains(t, p, "net.ipv4.neigh.default.gc_thresh3=4000")
}
