package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/mebx"
)

const mebxUsage = `Usage:
  amtsim mebx init  --store FILE [--force]     factory defaults (MEBx password "admin")
  amtsim mebx show  --store FILE [--json]      settings; secrets are shown only as (set)
  amtsim mebx set   --store FILE KEY=VALUE...  as typed into MEBx; refused entries change nothing
  amtsim mebx reset --store FILE               back to factory defaults

Keys: %s
`

func cmdMEBx(args []string, stdout io.Writer) error {
	text := fmt.Sprintf(mebxUsage, strings.Join(mebx.Keys(), ", "))
	if len(args) == 0 {
		return usageError{msg: "want init, show, set or reset", text: text}
	}
	verb := args[0]
	switch verb {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, text)
		return nil
	case "init", "show", "set", "reset":
	default:
		return usageError{msg: fmt.Sprintf("unknown verb %q (want init, show, set or reset)", verb), text: text}
	}
	fs := newFlags("mebx "+verb, "mebx "+verb)
	store := fs.String("store", "", "MEBx store file (required)")
	force := fs.Bool("force", false, "init: overwrite an existing store")
	asJSON := fs.Bool("json", false, "show: print the settings as JSON (secrets masked)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: amtsim mebx %s --store FILE", verb)
		if verb == "set" {
			fmt.Fprintf(fs.Output(), " KEY=VALUE...\n\nKeys: %s", strings.Join(mebx.Keys(), ", "))
		}
		fmt.Fprintln(fs.Output())
		fs.PrintDefaults()
	}
	maxPos := 0
	if verb == "set" {
		maxPos = -1
	}
	pos, err := parseFlags(fs, args[1:], maxPos)
	if err != nil {
		return err
	}
	if *store == "" {
		return bad(fs, "--store FILE is required")
	}
	st := mebx.NewFileStore(*store)
	switch verb {
	case "init":
		if _, err := os.Stat(*store); err == nil && !*force {
			return fmt.Errorf("%s already exists; use reset, or init --force", *store)
		}
		if err := st.Save(mebx.Defaults()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: factory defaults written (MEBx password %q must be changed)\n", *store, mebx.FactoryPassword)
	case "reset":
		if err := st.Save(mebx.Defaults()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: reset to factory defaults\n", *store)
	case "show":
		s, err := st.Load()
		if err != nil {
			return err
		}
		return show(stdout, s, *asJSON)
	case "set":
		if len(pos) == 0 {
			return bad(fs, "no KEY=VALUE given; keys: %s", strings.Join(mebx.Keys(), ", "))
		}
		s, err := st.Load()
		if errors.Is(err, mebx.ErrNoSettings) {
			s, err = mebx.Defaults(), nil
		}
		if err != nil {
			return err
		}
		if err := s.Set(pos...); err != nil {
			return err
		}
		if err := st.Save(s); err != nil {
			return err
		}
		keys := make([]string, 0, len(pos))
		for _, a := range pos {
			k, _, _ := strings.Cut(a, "=")
			keys = append(keys, k)
		}
		fmt.Fprintf(stdout, "%s: set %s\n", *store, strings.Join(keys, ", "))
	}
	return nil
}

// masked returns what may be shown of a secret: whether it is set, never
// the secret itself.
func masked(secret string) string {
	if secret == "" {
		return "(not set)"
	}
	return "(set)"
}

func show(w io.Writer, s mebx.Settings, asJSON bool) error {
	pw := "(factory default)"
	if s.PasswordChanged() {
		pw = "(changed)"
	}
	pid := "(not set)"
	if s.PID != "" {
		pid = identity.Dashed(s.PID)
	}
	addr := func(a interface{ IsValid() bool }) string {
		if !a.IsValid() {
			return "-"
		}
		return fmt.Sprint(a)
	}
	rows := [][2]string{
		{"password", pw},
		{"amt", onOff(s.AMTEnabled)},
		{"mode", s.Mode.String()},
		{"state", s.State.String()},
		{"pid", pid},
		{"pps", masked(s.PPS)},
		{"scs.address", addr(s.SCSAddress)},
		{"scs.port", fmt.Sprint(s.SCSPort)},
		{"scs.fqdn", orDash(s.SCSFQDN)},
		{"dhcp", onOff(s.DHCP)},
		{"ip", addr(s.IP)},
		{"netmask", addr(s.Netmask)},
		{"gateway", addr(s.Gateway)},
		{"dns1", addr(s.DNS1)},
		{"dns2", addr(s.DNS2)},
		{"hostname", orDash(s.HostName)},
		{"domain", orDash(s.DomainName)},
		{"flash_writes", fmt.Sprint(s.FlashWrites)},
		{"pki.remote_config", onOff(s.PKI.RemoteConfig)},
		{"pki.dns_suffix", orDash(s.PKI.DNSSuffix)},
	}
	if asJSON {
		m := map[string]any{}
		for _, r := range rows {
			m[r[0]] = r[1]
		}
		type hashRow struct {
			Name      string `json:"name"`
			Algorithm string `json:"algorithm"`
			Hash      string `json:"hash"`
			Active    bool   `json:"active"`
			Factory   bool   `json:"factory"`
		}
		hs := []hashRow{}
		for _, h := range s.PKI.Hashes {
			hs = append(hs, hashRow{h.Name, h.Algorithm.String(), hex.EncodeToString(h.Hash), h.Active, h.Default})
		}
		m["pki.hashes"] = hs
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-17s %s\n", r[0], r[1])
	}
	for _, h := range s.PKI.Hashes {
		state, origin := "active", "custom"
		if !h.Active {
			state = "inactive"
		}
		if h.Default {
			origin = "factory"
		}
		fmt.Fprintf(w, "%-17s %-32s %-6s %-8s %-7s %s\n", "pki.hash", h.Name, h.Algorithm, state, origin, hex.EncodeToString(h.Hash))
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
