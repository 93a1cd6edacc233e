package main

import (
	"fmt"
	"io"
	"os"

	"github.com/amtsim/amtsim/fleet"
)

const reportUsage = `Usage:
  amtsim report merge [--report OUT] FILE...

Adds up the --report files of one fleet's shards: counts add, the elapsed
time is the longest, and the percentiles are read from the merged latency
sketch (within 1% of the union's). Prints the summary; with --report,
writes the merged report in the same JSON format as one shard's. Exit
status: 0 every shard there and OK, 3 a shard failed or is missing, 2 a
file or the command line is wrong.
`

func cmdReport(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{msg: "want merge", text: reportUsage}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, reportUsage)
		return nil
	case "merge":
	default:
		return usageError{msg: fmt.Sprintf("unknown verb %q (want merge)", args[0]), text: reportUsage}
	}
	fs := newFlags("report merge", "report merge [--report OUT] FILE...")
	out := fs.String("report", "", "write the merged report to this file")
	files, err := parseFlags(fs, args[1:], -1)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return bad(fs, "no report files")
	}
	rs := make([]fleet.Report, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return exitError{exitUsage, err.Error()}
		}
		r, err := fleet.ParseReport(b)
		if err != nil {
			return exitError{exitUsage, fmt.Sprintf("%s: %v", f, err)}
		}
		rs = append(rs, r)
	}
	m, err := fleet.MergeReports(rs)
	if err != nil {
		return exitError{exitUsage, err.Error()}
	}
	printSummary(stdout, m, 0)
	if *out != "" {
		if err := writeReport(*out, m); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	if !m.OK {
		return exitError{exitNotProvisioned, fmt.Sprintf("shards %s: not all there and OK", joinInts(m.MergedShards))}
	}
	return nil
}
