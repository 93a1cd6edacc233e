package scenarios

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const minimal = `name: tiny
groups:
  - name: desks
    count: 1
expect:
  - state: provisioned
`

func TestShippedScenariosParse(t *testing.T) {
	all, err := Shipped("")
	require.NoError(t, err)
	conf, err := Shipped("conformance")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(conf), 15, "the conformance suite has at least 15 cases")
	bugs, err := Shipped("fieldbugs")
	require.NoError(t, err)
	assert.Len(t, all, len(conf)+len(bugs))
	names := map[string]bool{}
	for _, s := range all {
		assert.False(t, names[s.Name], "%s: names are unique", s.Name)
		names[s.Name] = true
		assert.NotEmpty(t, s.Description, "%s says what it proves", s.Name)
		if strings.HasPrefix(s.File, "fieldbugs/") {
			assert.True(t, strings.HasPrefix(s.Source, "https://"), "%s links its field report", s.Name)
		}
	}
	_, err = Shipped("nope")
	assert.Error(t, err)
}

func TestParseDefaults(t *testing.T) {
	s, err := Parse("tiny.yaml", []byte(minimal))
	require.NoError(t, err)
	assert.Equal(t, "amt5", string(s.Groups[0].Firmware))
	assert.Equal(t, "psk", s.Groups[0].Provisioning)
	assert.Equal(t, "dhcp", s.Groups[0].Address)
	assert.Equal(t, float64(1), s.TimeScale)
	assert.NotZero(t, s.Deadline)
	assert.Equal(t, "provisioned", s.Expect[0].Name)
}

// Each kind of mistake is one line naming the file, the line and the
// column of what is wrong.
func TestBadFiles(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		line, col  int
		says       string
	}{
		{"unknown top-level key", minimal + "colour: blue\n", 7, 1, `unknown key "colour"`},
		{"unknown group key", strings.Replace(minimal, "count: 1", "count: 1\n    cnt: 2", 1), 5, 5, `unknown key "cnt"`},
		{"wrong type", strings.Replace(minimal, "count: 1", "count: many", 1), 4, 12, "want a whole number"},
		{"negative count", strings.Replace(minimal, "count: 1", "count: -3", 1), 4, 12, "must not be negative"},
		{"bad duration", minimal + "deadline: soon\n", 7, 11, "not a duration"},
		{"bad choice", strings.Replace(minimal, "count: 1", "count: 1\n    provisioning: psst", 1), 5, 19, `"psst" is not provisioning`},
		{"unknown firmware", strings.Replace(minimal, "count: 1", "count: 1\n    firmware: amt99", 1), 5, 15, `no profile "amt99"`},
		{"unknown event", minimal + "    saw:\n      - event: hello.snet\n", 8, 16, `"hello.snet" is not an event`},
		{"bad MEBx entry", strings.Replace(minimal, "count: 1", "count: 1\n    mebx: [colour=blue]", 1), 5, 12, `unknown key "colour"`},
		{"key twice", strings.Replace(minimal, "count: 1", "count: 1\n    count: 2", 1), 5, 5, "given twice"},
		{"undeclared group", strings.Replace(minimal, "  - state: provisioned", "  - state: provisioned\n    group: laptops", 1), 6, 5, `group "laptops", which is not declared`},
		{"fault of two kinds", minimal + "faults:\n  - at: 1s\n    link: down\n    scs: stop\n", 8, 5, "this one has link and scs"},
		{"fault with no time", minimal + "faults:\n  - link: down\n", 8, 5, "one of at (a time) or when (a step)"},
		{"bad netem", minimal + "faults:\n  - at: 0s\n    netem: {loss: 1.5}\n", 9, 12, "not a fraction"},
		{"bad call answer", minimal + "faults:\n  - at: 0s\n    call: {name: CommitChanges, answer: slowly}\n", 9, 41, `"slowly" is not answer`},
		{"fraction on the SCS", minimal + "faults:\n  - at: 0s\n    fraction: 0.5\n    scs: stop\n", 8, 5, "no fraction or count"},
		{"no groups", "name: empty\nexpect:\n  - state: setup\n", 1, 1, "at least one group"},
		{"bad name", strings.Replace(minimal, "name: tiny", "name: Tiny Case", 1), 1, 1, "lower-case"},
		{"not YAML", "name: [unclosed\n", 1, 1, "did not find expected"},
		{"an alias", minimal + "x: &a 1\ny: *a\n", 7, 1, `unknown key "x"`},
		{"empty file", "", 1, 1, "no scenario"},
		{"refused call without status", strings.Replace(minimal, "  - state: provisioned", "  - refused: {call: CommitChanges}", 1), 6, 14, "both call and status"},
		{"refused yet provisioned", strings.Replace(minimal, "  - state: provisioned", "  - state: provisioned\n    refused: {tls: certificate_expired}", 1), 6, 5, "not provisioned"},
		{"bad PT_STATUS", strings.Replace(minimal, "  - state: provisioned", "  - refused: {call: CommitChanges, status: BROKEN}", 1), 6, 44, `"BROKEN" is not a PT_STATUS`},
		{"zero clock skew", minimal + "faults:\n  - at: 0s\n    clock_skew: 0s\n", 9, 17, "moves the clock"},
		{"external SCS on the embedded LAN", minimal + "scs: {external: 10.0.0.5}\n", 7, 6, "network: tap:NAME"},
		{"SCS fault on a TAP", minimal + "network: tap:amt0\nfaults:\n  - at: 0s\n    scs: stop\n", 9, 5, "needs the embedded LAN"},
		{"recorded on a TAP", strings.Replace(minimal, "  - state: provisioned", "  - recorded: true", 1) + "network: tap:amt0\n", 6, 5, "external SCS's records"},
		{"PSK with the factory password", strings.Replace(minimal, "count: 1", "count: 1\n    password: factory", 1), 3, 5, "password: changed"},
		{"wants nothing", strings.Replace(minimal, "  - state: provisioned", "  - name: nothing", 1), 6, 5, "expects nothing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(c.yaml))
			require.Error(t, err)
			var e *Error
			require.True(t, errors.As(err, &e), "%v", err)
			assert.Equal(t, c.line, e.Line, "%v", err)
			assert.Equal(t, c.col, e.Column, "%v", err)
			assert.Contains(t, err.Error(), c.says)
			assert.True(t, strings.HasPrefix(err.Error(), "bad.yaml:"), "%v", err)
			assert.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

// FuzzLoad: whatever the bytes, Parse returns a scenario that passed its
// checks or an Error with a position, and never panics.
func FuzzLoad(f *testing.F) {
	all, err := Shipped("")
	require.NoError(f, err)
	for _, s := range all {
		data, err := shipped.ReadFile(s.File)
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("name: [unclosed\n"))
	f.Add([]byte("x: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("an error without a position: %v", err)
			}
			if e.Line < 1 || e.Column < 1 {
				t.Fatalf("position %d:%d: %v", e.Line, e.Column, err)
			}
			return
		}
		if len(s.Groups) == 0 || len(s.Expect) == 0 || s.Deadline <= 0 || s.TimeScale < 1 {
			t.Fatalf("a scenario that passed its checks without groups, expectations or bounds: %+v", s)
		}
	})
}
