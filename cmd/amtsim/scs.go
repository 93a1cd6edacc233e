package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/gcpolicy"
	"github.com/amtsim/amtsim/scs"
)

// cmdSCS runs the reference SCS on the machine's own network stack: a Hello
// listener, its database and CA on disk, and /metrics.
func cmdSCS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("scs", "scs --db FILE [flags]")
	listen := fs.String("listen", ":9971", "address for the devices' Hellos")
	dbPath := fs.String("db", "", "PID/PPS database file (created if missing)")
	caDir := fs.String("ca", "", "directory of the CA (ca.crt, ca.key; made if missing; default: the database's directory)")
	generate := fs.String("generate", "", "add a generated fleet to the database: SEED:SHARD:COUNT (shard may be a range A-B)")
	importCSV := fs.String("import", "", "add PID,PPS[,MEBx password[,host]] lines from this CSV file (all or nothing)")
	importReplace := fs.Bool("import-replace", false, "let --import change the PPS, password and host of PIDs the database holds (their state and any pending new pair are kept)")
	password := fs.String("mebx-password", defaultMEBxPassword, "MEBx password of devices whose record names none")
	profilePath := fs.String("profile", "", "JSON file of what to configure (see --print-profile); default: the built-in profile")
	printProfile := fs.Bool("print-profile", false, "print the profile in force (built-in, or --profile's) as JSON and exit")
	domain := fs.String("domain", "", "domain the devices are given, unless the profile names one (default: each device keeps its own, from DHCP or MEBx)")
	noTLS := fs.Bool("no-tls", false, "provision over plain 16992 with Digest only, and leave TLS off")
	pki := fs.Bool("pki", false, "answer PKI Hellos too (remote configuration): the CA issues a provisioning certificate for --pki-fqdn,\nand the devices must trust the CA (the pki.hash entry it prints, for amtsim mebx set or --mebx)")
	pkiFQDN := fs.String("pki-fqdn", "", "with --pki: the provisioning certificate's CN, under the devices' PKI DNS suffix or DHCP domain\n(default ProvisionServer.<--domain>)")
	workers := fs.Int("workers", 0, "sessions at once (default 16 per core)")
	helloConns := fs.Int("hello-conns", 0, "Hello connections read at once; one past it is closed unread and counted\n(amtsim_scs_hellos_total{result=\"refused\"}; default 1024, leaving descriptors for sessions)")
	queue := fs.Int("queue", 0, "Hellos that may wait for a worker; one that finds the queue full is dropped and the device\nis heard again only at its next Hello, minutes later (default 4096; set it to the fleet's size)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics on this address")
	logFormat := fs.String("log-format", "text", "text | json")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	c := checks{fs: fs}
	c.intIn("workers", *workers, 0, 100000)
	c.intIn("queue", *queue, 0, 1<<24)
	c.oneOf("log-format", *logFormat, "text", "json")
	if c.err != nil {
		return c.err
	}
	if *pki && *noTLS {
		return bad(fs, "--pki needs TLS: drop --no-tls")
	}
	if *pki && *pkiFQDN == "" {
		if *domain == "" {
			return bad(fs, "--pki needs --pki-fqdn, or --domain to name ProvisionServer.<domain>")
		}
		*pkiFQDN = "ProvisionServer." + *domain
	}
	profile := scs.DefaultProfile(*domain)
	if *profilePath != "" {
		p, err := scs.ReadProfile(*profilePath)
		if err != nil {
			return err
		}
		if p.DomainName == "" {
			p.DomainName = *domain
		}
		profile = p
	}
	if *printProfile {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(profile.File())
	}
	if *dbPath == "" {
		return bad(fs, "--db is required")
	}
	var (
		seed   uint64
		shards []int
		count  int
	)
	if *generate != "" {
		var err error
		if seed, shards, count, err = parseGenerate(*generate); err != nil {
			return bad(fs, "--generate: %v", err)
		}
		if total, max := len(shards)*count, maxRecords(); total > max {
			return bad(fs, "--generate %s: %d records, and this machine's memory holds about %d", *generate, total, max)
		}
	}
	handler, err := logHandler("scs", *logFormat, stdout)
	if err != nil {
		return err
	}
	gc, restoreGC := tuneGC(stderr, 0)
	defer restoreGC()

	db, err := scs.OpenDB(*dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	if n := db.Torn(); n > 0 {
		fmt.Fprintf(stderr, "amtsim scs: %s: dropped %d torn record(s) left by a crash or a full disk; every whole record is kept\n", *dbPath, n)
	}
	if *generate != "" {
		progress := setupProgress(stderr)
		g, err := db.Generate(ctx, seed, shards, count, "", func(done, total int) { progress("database", done, total) })
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted: what was generated is on disk
			}
			return err
		}
		if err := g.ClashErr(); err != nil {
			// The rest of the fleet is served; these devices' Hellos find
			// another device's record until it moves off their PID.
			fmt.Fprintf(stderr, "amtsim scs: --generate %s: %v\n", *generate, err)
		}
	}
	if *importCSV != "" {
		f, err := os.Open(*importCSV)
		if err != nil {
			return err
		}
		_, err = db.ImportCSV(f, scs.ImportOptions{Replace: *importReplace})
		f.Close()
		if err != nil {
			return err
		}
	}
	var ca *scs.CA
	if !*noTLS {
		dir := *caDir
		if dir == "" {
			dir = filepath.Dir(*dbPath)
		}
		if ca, err = scs.LoadOrCreateCA(dir); err != nil {
			return err
		}
	}
	var provisioning *tls.Certificate
	if *pki {
		if provisioning, err = ca.ProvisioningCertificate(*pkiFQDN); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pki: provisioning certificate CN=%s; devices trust it with: amtsim mebx set --store FILE 'pki.hash=%s'\n", *pkiFQDN, ca.RootHashEntry())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := scs.NewServer(scs.ServerOptions{DB: db, CA: ca, Profile: profile, Password: *password, NoTLS: *noTLS, PKI: provisioning,
		Workers: *workers, Queue: *queue, HelloConns: *helloConns, Events: scs.LogSink(handler), Metrics: reg})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		_, stop, err := serveMetrics(*metricsAddr, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	slog.New(handler).Info(string(event.SCSListening), "hello", ln.Addr().String(), "records", len(db.All()), "tls", !*noTLS, "pki", *pki, "metrics", *metricsAddr, "gc", gc)
	srv.Start(ctx)
	defer srv.Stop()
	if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return err
	}
	return nil
}

// parseGenerate reads SEED:SHARD:COUNT, SHARD possibly A-B.
func parseGenerate(s string) (uint64, []int, int, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, nil, 0, fmt.Errorf("%q: want SEED:SHARD:COUNT", s)
	}
	seed, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("seed %q", parts[0])
	}
	lo, hi, isRange := strings.Cut(parts[1], "-")
	a, err1 := strconv.Atoi(lo)
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.Atoi(hi)
	}
	if err1 != nil || err2 != nil || a < 0 || b < a {
		return 0, nil, 0, fmt.Errorf("shard %q", parts[1])
	}
	var shards []int
	for i := a; i <= b; i++ {
		shards = append(shards, i)
	}
	if b >= identity.MaxShards {
		return 0, nil, 0, fmt.Errorf("shard %q: shards run from 0 to %d", parts[1], identity.MaxShards-1)
	}
	count, err := strconv.Atoi(parts[2])
	if err != nil || count < 1 || count > identity.MaxIndex {
		return 0, nil, 0, fmt.Errorf("count %q: want 1 to %d per shard", parts[2], identity.MaxIndex)
	}
	return seed, shards, count, nil
}

// maxRecords is about how many records this machine's memory holds.
func maxRecords() int {
	avail, err := gcpolicy.Available()
	if err != nil {
		return identity.MaxShards * identity.MaxIndex
	}
	return scs.MaxRecords(avail)
}

// serveMetrics serves reg's /metrics on addr until stop; it returns the
// address it listens on (addr may ask for port 0).
func serveMetrics(addr string, reg *prometheus.Registry) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr().String(), func() { _ = hs.Close() }, nil
}
