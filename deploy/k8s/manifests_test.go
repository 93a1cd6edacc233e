// Package k8s holds the Kubernetes manifests of a sharded fleet; its test
// renders every overlay with kubectl kustomize and reads the output into
// the k8s.io/api types, strictly.
package k8s

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/amtsim/amtsim/internal/peer"
	"github.com/amtsim/amtsim/scenarios"
)

// objects are one overlay's rendered objects by kind.
type objects map[string][][]byte

func render(t *testing.T, dir string) objects {
	t.Helper()
	peer.Need(t, "kubectl")
	out, err := exec.Command("kubectl", "kustomize", dir).Output()
	require.NoError(t, err, "kubectl kustomize %s", dir)
	objs := objects{}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var meta struct {
			Kind string `json:"kind"`
		}
		require.NoError(t, yaml.Unmarshal(doc, &meta))
		objs[meta.Kind] = append(objs[meta.Kind], doc)
	}
	return objs
}

// strict decodes doc into v; a field the type does not have is an error.
func strict(t *testing.T, doc []byte, v any) {
	t.Helper()
	require.NoError(t, yaml.UnmarshalStrict(doc, v))
}

func configMap(t *testing.T, objs objects, prefix string) corev1.ConfigMap {
	t.Helper()
	for _, doc := range objs["ConfigMap"] {
		var cm corev1.ConfigMap
		strict(t, doc, &cm)
		if strings.HasPrefix(cm.Name, prefix) {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s*", prefix)
	return corev1.ConfigMap{}
}

// The fleet is an Indexed Job whose pods each run one shard: the shard
// from $JOB_COMPLETION_INDEX (amtsim fleet reads it), the whole from
// --shards, the figures from the ConfigMap, with NET_RAW and nothing else.
func checkJob(t *testing.T, objs objects) batchv1.Job {
	t.Helper()
	job, cm, c := checkIndexedJob(t, objs)
	assert.Equal(t, "true", job.Spec.Template.Annotations["prometheus.io/scrape"])
	require.NotEmpty(t, c.Args)
	assert.Equal(t, "fleet", c.Args[0])
	assert.Contains(t, c.Args, "--shards=$(AMTSIM_SHARDS)")
	assert.Contains(t, c.Args, "--report=/reports/shard-$(JOB_COMPLETION_INDEX).json")
	assert.Contains(t, c.Args, "--report-stdout")
	assert.Contains(t, c.Args, "--mebx=scs.address=$(AMTSIM_SCS)")
	assert.Contains(t, c.Args, "--metrics-linger=30s", "the last scrape sees the final counts")
	for _, k := range []string{"AMTSIM_SEED", "AMTSIM_DEVICES", "AMTSIM_UPLINK"} {
		assert.NotEmpty(t, cm.Data[k], k)
	}
	return job
}

// checkIndexedJob checks what every variant of the Job shares: one pod
// per shard, the shard from $JOB_COMPLETION_INDEX (amtsim reads it), the
// env from the generated ConfigMap and every $(VAR) of the args defined by
// it, NET_RAW and nothing else.
func checkIndexedJob(t *testing.T, objs objects) (batchv1.Job, corev1.ConfigMap, corev1.Container) {
	t.Helper()
	require.Len(t, objs["Job"], 1)
	var job batchv1.Job
	strict(t, objs["Job"][0], &job)
	require.NotNil(t, job.Spec.CompletionMode)
	assert.Equal(t, batchv1.IndexedCompletion, *job.Spec.CompletionMode)
	cm := configMap(t, objs, "amtsim-fleet")
	require.NotNil(t, job.Spec.Completions)
	assert.Equal(t, cm.Data["AMTSIM_SHARDS"], itoa(*job.Spec.Completions), "one completion per shard")
	pod := job.Spec.Template
	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]
	for _, a := range c.Args {
		assert.False(t, strings.HasPrefix(a, "--shard="), "the shard comes from JOB_COMPLETION_INDEX, not a flag: %s", a)
		// Kubernetes leaves a $(VAR) it cannot resolve as it is: each must
		// be the Job's index or a key of the ConfigMap.
		for _, m := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(a, -1) {
			_, ok := cm.Data[m[1]]
			assert.True(t, ok || m[1] == "JOB_COMPLETION_INDEX", "%s: $(%s) is defined nowhere", a, m[1])
		}
	}
	require.Len(t, c.EnvFrom, 1)
	assert.Equal(t, cm.Name, c.EnvFrom[0].ConfigMapRef.Name, "the env comes from the generated ConfigMap")
	sc := c.SecurityContext
	require.NotNil(t, sc)
	require.NotNil(t, sc.Capabilities)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	assert.Equal(t, []corev1.Capability{"NET_RAW"}, sc.Capabilities.Add, "AF_PACKET needs NET_RAW, and nothing more")
	assert.Equal(t, corev1.RestartPolicyNever, pod.Spec.RestartPolicy)
	assert.Equal(t, "ghcr.io/amtsim/amtsim:latest", c.Image)
	return job, cm, c
}

func itoa(v int32) string { return strconv.Itoa(int(v)) }

func atoi(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(s)
	require.NoError(t, err)
	return v
}

func TestBase(t *testing.T) {
	checkJob(t, render(t, "base"))
}

func TestMultusBridgeOverlay(t *testing.T) {
	objs := render(t, "overlays/multus-bridge")
	job := checkJob(t, objs)
	assert.Equal(t, "amtsim-lab", job.Spec.Template.Annotations["k8s.v1.cni.cncf.io/networks"])
	require.Len(t, objs["NetworkAttachmentDefinition"], 1)
	var nad struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Config string `json:"config"`
		} `json:"spec"`
	}
	strict(t, objs["NetworkAttachmentDefinition"][0], &nad)
	assert.Equal(t, "k8s.cni.cncf.io/v1", nad.APIVersion)
	assert.Equal(t, "amtsim-lab", nad.Metadata.Name)
	var cni struct {
		CNIVersion string         `json:"cniVersion"`
		Name       string         `json:"name"`
		Type       string         `json:"type"`
		Bridge     string         `json:"bridge"`
		IPAM       map[string]any `json:"ipam"`
	}
	strict(t, []byte(nad.Spec.Config), &cni)
	assert.Equal(t, "bridge", cni.Type, "a bridge learns every device's MAC")
	assert.Empty(t, cni.IPAM, "the devices take their addresses by DHCP")
	assert.Equal(t, "packet:net1", configMap(t, objs, "amtsim-fleet").Data["AMTSIM_UPLINK"], "the Multus interface")
}

func TestHostInterfaceOverlay(t *testing.T) {
	objs := render(t, "overlays/host-interface")
	job := checkJob(t, objs)
	assert.True(t, job.Spec.Template.Spec.HostNetwork)
	assert.Equal(t, "packet:eth1", configMap(t, objs, "amtsim-fleet").Data["AMTSIM_UPLINK"])
	require.Len(t, job.Spec.Template.Spec.TopologySpreadConstraints, 1, "one pod per node: each has the node's NIC")
}

// The scenario overlay runs `amtsim scenario run` in every pod on the
// Multus interface, with the scenario from a ConfigMap mounted where
// AMTSIM_SCENARIO says; that file is a scenario that runs on a real
// network (checked as amtsim scenario validate --network would).
func TestScenarioOverlay(t *testing.T) {
	objs := render(t, "overlays/scenario")
	job, cm, c := checkIndexedJob(t, objs)
	require.GreaterOrEqual(t, len(c.Args), 3)
	assert.Equal(t, []string{"scenario", "run", "$(AMTSIM_SCENARIO)"}, c.Args[:3])
	assert.Contains(t, c.Args, "--network=$(AMTSIM_UPLINK)")
	assert.Contains(t, c.Args, "--junit=/reports/junit-$(JOB_COMPLETION_INDEX).xml")
	assert.Empty(t, job.Spec.Template.Annotations["prometheus.io/scrape"], "a scenario run serves no /metrics")
	assert.Empty(t, c.Ports)
	assert.Equal(t, "amtsim-lab", job.Spec.Template.Annotations["k8s.v1.cni.cncf.io/networks"], "on the Multus attachment")

	dir, file := filepath.Split(cm.Data["AMTSIM_SCENARIO"])
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == filepath.Clean(dir) {
			mount = &c.VolumeMounts[i]
		}
	}
	require.NotNil(t, mount, "%s is mounted", dir)
	var vol *corev1.Volume
	for i := range job.Spec.Template.Spec.Volumes {
		if job.Spec.Template.Spec.Volumes[i].Name == mount.Name {
			vol = &job.Spec.Template.Spec.Volumes[i]
		}
	}
	require.NotNil(t, vol)
	require.NotNil(t, vol.ConfigMap)
	scm := configMap(t, objs, "amtsim-scenario")
	assert.Equal(t, scm.Name, vol.ConfigMap.Name, "the generated ConfigMap, by its hashed name")
	data, ok := scm.Data[file]
	require.True(t, ok, "the ConfigMap holds %s", file)
	sc, err := scenarios.Parse(file, []byte(data))
	require.NoError(t, err)
	require.NoError(t, sc.OnNetwork(cm.Data["AMTSIM_UPLINK"]), "the scenario runs on the pods' network")
}

func TestSCSOverlay(t *testing.T) {
	objs := render(t, "overlays/scs")
	require.Len(t, objs["Deployment"], 1)
	var d appsv1.Deployment
	strict(t, objs["Deployment"][0], &d)
	assert.Equal(t, appsv1.RecreateDeploymentStrategyType, d.Spec.Strategy.Type, "one owner of the locked database at a time")
	c := d.Spec.Template.Spec.Containers[0]
	assert.Equal(t, "scs", c.Args[0])
	assert.Contains(t, c.Args, "--db=/data/scs.db")
	assert.Contains(t, c.Args, "--generate=$(AMTSIM_GENERATE)")
	require.Len(t, objs["PersistentVolumeClaim"], 1)
	var pvc corev1.PersistentVolumeClaim
	strict(t, objs["PersistentVolumeClaim"][0], &pvc)
	require.Len(t, d.Spec.Template.Spec.Volumes, 1)
	assert.Equal(t, pvc.Name, d.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName)
	require.Len(t, objs["Service"], 1)
	var svc corev1.Service
	strict(t, objs["Service"][0], &svc)
	assert.Equal(t, int32(9971), svc.Spec.Ports[0].Port)
	assert.Equal(t, d.Spec.Selector.MatchLabels, svc.Spec.Selector)
	cm := configMap(t, objs, "amtsim-scs")
	fleet := configMap(t, render(t, "base"), "amtsim-fleet")
	parts := strings.Split(cm.Data["AMTSIM_GENERATE"], ":")
	require.Len(t, parts, 3)
	assert.Equal(t, fleet.Data["AMTSIM_SEED"], parts[0], "the SCS holds the fleet's seed")
	assert.Equal(t, "0-"+itoa(int32(atoi(t, fleet.Data["AMTSIM_SHARDS"])-1)), parts[1], "and every shard")
	assert.Equal(t, fleet.Data["AMTSIM_DEVICES"], parts[2], "and each shard's devices")
}
