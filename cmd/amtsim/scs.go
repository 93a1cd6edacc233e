package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
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

	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/scs"
)

// profileFile is the JSON form of what the SCS configures (--profile).
type profileFile struct {
	AdminUser       string     `json:"admin_user"`
	AdminPassword   string     `json:"admin_password"`
	NewMEBxPassword string     `json:"new_mebx_password"`
	Domain          string     `json:"domain"`
	Users           []scs.User `json:"users"`
	Kerberos        *struct {
		Realm        string `json:"realm"`
		KeyVersion   uint32 `json:"key_version"`
		Encryption   uint32 `json:"encryption"`
		MasterKey    []byte `json:"master_key"` // base64 in JSON
		MaxClockSkew uint32 `json:"max_clock_skew"`
	} `json:"kerberos"`
}

// cmdSCS runs the reference SCS on the machine's own network stack: a Hello
// listener, its database and CA on disk, and /metrics.
func cmdSCS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":9971", "address for the devices' Hellos")
	dbPath := fs.String("db", "", "PID/PPS database file (created if missing)")
	caDir := fs.String("ca", "", "directory of the CA (ca.crt, ca.key; made if missing; default: the database's directory)")
	generate := fs.String("generate", "", "add a generated fleet to the database: SEED:SHARD:COUNT (shard may be a range A-B)")
	importCSV := fs.String("import", "", "add PID,PPS[,MEBx password[,host]] lines from this CSV file")
	password := fs.String("mebx-password", defaultMEBxPassword, "MEBx password of devices whose record names none")
	profilePath := fs.String("profile", "", "JSON file of what to configure (admin, users, domain, Kerberos, new MEBx password); default: fleet.DefaultProfile")
	domain := fs.String("domain", "amtsim.example", "domain the devices are given (unless the profile names one)")
	noTLS := fs.Bool("no-tls", false, "provision over plain 16992 with Digest only, and leave TLS off")
	workers := fs.Int("workers", 0, "sessions at once (default 16 per core)")
	queue := fs.Int("queue", 0, "Hellos that may wait for a worker; one that finds the queue full is dropped and the device\nis heard again only at its next Hello, minutes later (default 4096; set it to the fleet's size)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics on this address")
	logFormat := fs.String("log-format", "text", "text | json")
	if _, err := parseInterleaved(fs, args); err != nil {
		return err
	}
	if *dbPath == "" {
		return usageError{"scs: --db is required"}
	}
	handler, err := logHandler("scs", *logFormat, stdout)
	if err != nil {
		return err
	}
	gc, restoreGC := tuneGC(stderr)
	defer restoreGC()
	profile := fleet.DefaultProfile(*domain)
	if *profilePath != "" {
		p, err := readProfile(*profilePath, *domain)
		if err != nil {
			return err
		}
		profile = p
	}

	db, err := scs.OpenDB(*dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	if *generate != "" {
		seed, shards, count, err := parseGenerate(*generate)
		if err != nil {
			return usageError{"scs: --generate: " + err.Error()}
		}
		if err := db.Generate(seed, shards, count, ""); err != nil {
			return err
		}
	}
	if *importCSV != "" {
		f, err := os.Open(*importCSV)
		if err != nil {
			return err
		}
		_, err = db.ImportCSV(f)
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := scs.NewServer(scs.ServerOptions{DB: db, CA: ca, Profile: profile, Password: *password, NoTLS: *noTLS,
		Workers: *workers, Queue: *queue, Events: scs.LogSink(handler), Metrics: reg})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		mln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(mln) }()
		defer hs.Close()
	}
	slog.New(handler).Info("scs.listening", "hello", ln.Addr().String(), "records", len(db.All()), "tls", !*noTLS, "metrics", *metricsAddr, "gc", gc)
	srv.Start(ctx)
	defer srv.Stop()
	if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return err
	}
	return nil
}

func readProfile(path, domain string) (scs.Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return scs.Profile{}, err
	}
	var pf profileFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pf); err != nil {
		return scs.Profile{}, fmt.Errorf("scs: profile %s: %w", path, err)
	}
	p := fleet.DefaultProfile(domain)
	if pf.AdminUser != "" {
		p.AdminUser = pf.AdminUser
	}
	if pf.AdminPassword != "" {
		p.AdminPassword = pf.AdminPassword
	}
	if pf.Domain != "" {
		p.DomainName = pf.Domain
	}
	if pf.Users != nil {
		p.Users = pf.Users
	}
	p.NewMEBxPassword = pf.NewMEBxPassword
	if k := pf.Kerberos; k != nil {
		p.Kerberos = &scs.Kerberos{Realm: k.Realm, KeyVersion: k.KeyVersion, Encryption: k.Encryption, MasterKey: k.MasterKey, MaxClockSkew: k.MaxClockSkew}
	}
	return p, nil
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
	count, err := strconv.Atoi(parts[2])
	if err != nil || count < 1 {
		return 0, nil, 0, fmt.Errorf("count %q", parts[2])
	}
	return seed, shards, count, nil
}
