package ptstatus

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	for _, s := range []string{"INVALID_PASSWORD", "0x806", "2054"} {
		c, err := Parse(s)
		require.NoError(t, err, s)
		assert.Equal(t, InvalidPassword, c, s)
	}
	_, err := Parse("NO_SUCH_STATUS")
	assert.Error(t, err)
	_, err = Parse("-1")
	assert.Error(t, err)
}
