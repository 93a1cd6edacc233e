package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/amtsim/amtsim/internal/atomicfile"
	"github.com/amtsim/amtsim/scenarios"
)

// exitExpectations: the scenarios ran, and an expectation failed.
const exitExpectations = 4

const scenarioUsage = `Usage:
  amtsim scenario list     [--suite conformance|fieldbugs]
  amtsim scenario validate FILE|NAME...
  amtsim scenario run      [--seed N] [--shard N] [--network NET] [--junit FILE] [--json FILE] [--pcap-dir DIR] FILE|NAME...
  amtsim scenario run      --suite conformance|fieldbugs|all [flags]

A NAME is a shipped scenario (amtsim scenario list). Exit status: 0 every
expectation held, 4 one failed, 2 a file or the command line is wrong,
1 a run could not be made.
`

func cmdScenario(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{msg: "want list, validate or run", text: scenarioUsage}
	}
	verb := args[0]
	switch verb {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, scenarioUsage)
		return nil
	case "list", "validate", "run":
	default:
		return usageError{msg: fmt.Sprintf("unknown verb %q (want list, validate or run)", verb), text: scenarioUsage}
	}
	fs := newFlags("scenario "+verb, "scenario "+verb+" [flags] FILE|NAME...")
	suite := fs.String("suite", "", "the shipped suite: conformance, fieldbugs (all: both)")
	seed := fs.Uint64("seed", 0, "run: replace each file's seed with this one")
	junit := fs.String("junit", "", "run: write the verdicts as JUnit XML to FILE")
	jsonOut := fs.String("json", "", "run: write the reports as JSON to FILE")
	pcapDir := fs.String("pcap-dir", "", "run: write a capture of every device that failed an expectation under DIR/SCENARIO/")
	keep := fs.String("dir", "", "run: keep the run's MEBx stores and SCS database under DIR (default a temporary directory, removed)")
	network := fs.String("network", "", "run: put the scenarios on this network instead of their files' own: embedded | tap:NAME | packet:IFACE\n(a real network's DHCP, DNS and SCS are the SCS under test's)")
	shard := fs.Int("shard", 0, "run: set this run's identities apart from other runs of the same scenarios and seed against one SCS:\ngroup i takes identity shard SHARD·groups+i (default: $JOB_COMPLETION_INDEX when set, else 0)")
	pos, err := parseFlags(fs, args[1:], -1)
	if err != nil {
		return err
	}
	if err := shardFromEnv(fs, shard); err != nil {
		return err
	}
	if *shard < 0 {
		return bad(fs, "--shard %d: want 0 or more", *shard)
	}
	if *suite == "all" {
		*suite = ""
	} else if *suite != "" {
		c := &checks{fs: fs}
		c.oneOf("suite", *suite, append(scenarios.Suites, "all")...)
		if c.err != nil {
			return c.err
		}
	}
	if verb == "list" {
		all, err := scenarios.Shipped(*suite)
		if err != nil {
			return err
		}
		for _, s := range all {
			desc, _, _ := strings.Cut(strings.TrimSpace(s.Description), ". ")
			fmt.Fprintf(stdout, "%-36s %s\n", s.Name, desc)
		}
		return nil
	}
	var list []*scenarios.Scenario
	if len(pos) == 0 {
		if !isSet(fs, "suite") {
			return bad(fs, "name a scenario file, a shipped scenario, or --suite")
		}
		if list, err = scenarios.Shipped(*suite); err != nil {
			return err
		}
	}
	for _, p := range pos {
		s, err := load(p)
		if err != nil {
			// A bad file is the caller's mistake: one line, exit 2.
			return exitError{exitUsage, err.Error()}
		}
		list = append(list, s)
	}
	if *network != "" {
		for _, s := range list {
			if err := s.OnNetwork(*network); err != nil {
				return exitError{exitUsage, fmt.Sprintf("%s: %v", s.Name, err)}
			}
		}
	}
	if verb == "validate" {
		for _, s := range list {
			fmt.Fprintf(stdout, "%s: ok (%s)\n", s.File, s.Name)
		}
		return nil
	}
	o := scenarios.Options{Dir: *keep, Shard: *shard}
	if isSet(fs, "seed") {
		o.Seed = seed
	}
	var reps []*scenarios.Report
	failed := 0
	for _, s := range list {
		if ctx.Err() != nil {
			return interrupted(ctx, "scenario run stopped")
		}
		so := o
		if *pcapDir != "" {
			so.PcapDir = *pcapDir + "/" + s.Name
		}
		rep, err := scenarios.Run(ctx, s, so)
		if err != nil && rep == nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		if err != nil {
			fmt.Fprintf(stderr, "amtsim scenario: %s: %v\n", s.Name, err)
		}
		reps = append(reps, rep)
		printReport(stdout, rep)
		if !rep.Passed() {
			failed++
		}
	}
	if *junit != "" {
		var b bytes.Buffer
		if err := scenarios.WriteJUnit(&b, reps); err != nil {
			return err
		}
		if err := atomicfile.Write(*junit, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(reps, "", "  ")
		if err != nil {
			return err
		}
		if err := atomicfile.Write(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if failed > 0 {
		return exitError{exitExpectations, fmt.Sprintf("%d of %d scenarios failed an expectation", failed, len(reps))}
	}
	return nil
}

// load reads a scenario file, or a shipped one by name.
func load(p string) (*scenarios.Scenario, error) {
	if _, err := os.Stat(p); err == nil || strings.ContainsAny(p, "/.") {
		return scenarios.Load(p)
	}
	if s, ok := scenarios.Named(p); ok {
		return s, nil
	}
	return nil, errors.New(p + ": no such file, and no shipped scenario of that name (amtsim scenario list)")
}

func printReport(w io.Writer, rep *scenarios.Report) {
	verdict := "PASS"
	if !rep.Passed() {
		verdict = "FAIL"
	}
	shards := ""
	if len(rep.Shards) > 0 && rep.Shards[0] != 0 {
		shards = ", shards " + joinInts(rep.Shards) // --shard
	}
	fmt.Fprintf(w, "%s %s (seed %d%s, %d devices, %.1fs)\n", verdict, rep.Scenario, rep.Seed, shards, rep.Devices, rep.Duration.Seconds())
	for _, c := range rep.Cases {
		mark := "ok  "
		if !c.Passed() {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s: %s (%d devices)\n", mark, c.Group, c.Name, c.Devices)
		for i, f := range c.Failures {
			if i == 3 {
				fmt.Fprintf(w, "       … and %d more\n", len(c.Failures)-3)
				break
			}
			fmt.Fprintf(w, "       %s: %s\n", f.Device, f.Reason)
		}
	}
	for _, e := range rep.FaultErrors {
		fmt.Fprintf(w, "  fault not applied: %s\n", e)
	}
	if rep.Uplink != nil {
		fmt.Fprintf(w, "  %s\n", uplinkLine(*rep.Uplink))
	}
	for _, p := range rep.Captures {
		fmt.Fprintf(w, "  capture: %s\n", p)
	}
}
