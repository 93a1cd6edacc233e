module github.com/amtsim/amtsim

go 1.26.3

// AMT, like OpenSSL, takes certificates whose serial number is negative
// (a DER INTEGER with its top bit set), and SCSs issue them: MeshCentral
// writes a decimal serial where node-forge reads hex, so a few of its
// device certificates in a hundred have one. Go refuses them by default.
godebug x509negativeserial=1

require (
	github.com/google/gopacket v1.1.19
	github.com/google/pprof v0.0.0-20261105003125-4bf881d7fb0b
	github.com/miekg/dns v1.1.73
	github.com/prometheus/client_golang v1.25.0
	github.com/songgao/water v0.0.0-20200317203138-2b4b6d7c09d8
	github.com/stretchr/testify v1.12.1
	golang.org/x/sys v0.48.0
	gvisor.dev/gvisor v0.0.0-20260701204157-69c2d17aea96
)

require (
	github.com/DataDog/sketches-go v1.4.8 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/btree v1.1.2 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/exp v0.0.0-20250711185948-6ae5c78190dc // indirect
	golang.org/x/net v0.59.0 // indirect
	golang.org/x/time v0.15.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
