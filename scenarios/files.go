package scenarios

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
)

// shipped are the scenarios amtsim ships: the conformance suite a team
// runs against its SCS, and reproductions of published field bugs.
//
//go:embed conformance/*.yaml fieldbugs/*.yaml
var shipped embed.FS

// Suites are the folders of shipped scenarios.
var Suites = []string{"conformance", "fieldbugs"}

// Shipped parses every shipped scenario of suite ("" for all), by file
// name.
func Shipped(suite string) ([]*Scenario, error) {
	var out []*Scenario
	for _, s := range Suites {
		if suite != "" && s != suite {
			continue
		}
		names, err := fs.Glob(shipped, s+"/*.yaml")
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, n := range names {
			data, err := shipped.ReadFile(n)
			if err != nil {
				return nil, err
			}
			sc, err := Parse(n, data)
			if err != nil {
				return nil, err
			}
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("scenario: no suite %q (have %v)", suite, Suites)
	}
	return out, nil
}

// Named finds a shipped scenario by name ("psk-happy-path") or by its
// path ("conformance/psk-happy-path.yaml").
func Named(name string) (*Scenario, bool) {
	all, err := Shipped("")
	if err != nil {
		return nil, false
	}
	for _, s := range all {
		if s.Name == name || s.File == name || path.Base(s.File) == name {
			return s, true
		}
	}
	return nil, false
}
