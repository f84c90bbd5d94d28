package main

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/moemesh/moemesh/sharding"
)

// The Helm chart's contract (helm/moemesh, docs/deploy.md): what each
// scenario must render, checked on the decoded manifests and with the
// program's own flag sets.

// chartWant is what a scenario must render; the numbers are written here by
// hand from the scenario's intent, not read back from the chart.
type chartWant struct {
	workers, spares, tp int
	expertReplicas      int
	spareSlots          int
	context             int
	modelDir            string
	gpus                int64
	device              string
	workerAntiAffinity  bool
	fetch               bool
	// externalEtcd are the endpoints of an external etcd; nil: bundled.
	externalEtcd []string
	etcdTLS      string // Secret of the etcd client certificate
	etcdUser     string
	etcdPassword [2]string // Secret and key of the etcd password
	apiKeys      [2]string // Secret and key
	adminToken   [2]string
	apiTLS       string
	clusterTLS   [2]string // coordinator and worker Secrets
	gossipKey    [2]string
	// shape, when set, is the model whose memory model the worker's memory
	// must cover.
	shape          *sharding.ModelShape
	serviceMonitor bool
	networkPolicy  bool
	testPod        bool
}

func shapeOf(s sharding.ModelShape) *sharding.ModelShape { return &s }

// chartScenarios are the default values, every ci/*-values.yaml and every
// examples/*.yaml.
var chartScenarios = []struct {
	name  string
	files []string
	want  chartWant
}{
	{"default", nil, chartWant{
		workers: 2, tp: 1, context: 8192, modelDir: "/models/Qwen3-30B-A3B", gpus: 1, device: "cuda:0",
		workerAntiAffinity: true, shape: shapeOf(sharding.Qwen3_30B_A3B()), testPod: true,
	}},
	{"cpu", []string{"ci/cpu-values.yaml"}, chartWant{
		workers: 3, spares: 1, tp: 1, context: 2048, modelDir: "/models/tiny", device: "cpu",
		workerAntiAffinity: true, fetch: true, testPod: true,
	}},
	{"235b-2x8", []string{"ci/gpu-235b-2x8-values.yaml"}, chartWant{
		workers: 16, tp: 8, context: 32768, modelDir: "/models/Qwen3-235B-A22B", gpus: 1, device: "cuda:0",
		shape: shapeOf(sharding.Qwen3_235B_A22B()), serviceMonitor: true, networkPolicy: true, testPod: true,
	}},
	{"30b-1x8", []string{"ci/gpu-30b-1x8-values.yaml"}, chartWant{
		workers: 8, spares: 1, tp: 4, expertReplicas: 8, spareSlots: 2, context: 32768, modelDir: "/models/Qwen3-30B-A3B",
		gpus: 1, device: "cuda:0", shape: shapeOf(sharding.Qwen3_30B_A3B()), testPod: true,
	}},
	{"external-etcd", []string{"ci/external-etcd-values.yaml"}, chartWant{
		workers: 4, spares: 1, tp: 2, context: 8192, modelDir: "/models/Qwen3-30B-A3B", gpus: 2, device: "cuda:0",
		workerAntiAffinity: true, testPod: true,
		externalEtcd: []string{"https://etcd-0.etcd.infra.svc:2379", "https://etcd-1.etcd.infra.svc:2379", "https://etcd-2.etcd.infra.svc:2379"},
		etcdTLS:      "moemesh-etcd-client", etcdUser: "moemesh", etcdPassword: [2]string{"moemesh-etcd-password", "password"},
	}},
	{"tls", []string{"ci/tls-values.yaml"}, chartWant{
		workers: 2, tp: 1, context: 8192, modelDir: "/models/Qwen3-30B-A3B", device: "cpu", workerAntiAffinity: true,
		apiKeys: [2]string{"moemesh-api-keys", "keys"}, adminToken: [2]string{"moemesh-admin-token", "token"},
		apiTLS: "moemesh-api-tls", clusterTLS: [2]string{"moemesh-coordinator-tls", "moemesh-worker-tls"},
		gossipKey: [2]string{"moemesh-gossip-key", "gossip.key"}, serviceMonitor: true, networkPolicy: true,
	}},
	{"example-235b", []string{"examples/qwen3-235b-a22b-2x8-h100.yaml"}, chartWant{
		workers: 16, tp: 8, context: 32768, modelDir: "/models/Qwen3-235B-A22B", gpus: 1, device: "cuda:0",
		shape: shapeOf(sharding.Qwen3_235B_A22B()), testPod: true,
	}},
	{"example-30b", []string{"examples/qwen3-30b-a3b-1x8-h100.yaml"}, chartWant{
		workers: 8, tp: 4, context: 32768, modelDir: "/models/Qwen3-30B-A3B", gpus: 1, device: "cuda:0",
		shape: shapeOf(sharding.Qwen3_30B_A3B()), testPod: true,
	}},
	{"example-cpu", []string{"examples/cpu-tiny.yaml"}, chartWant{
		workers: 3, spares: 1, tp: 1, context: 2048, modelDir: "/models/tiny", device: "cpu",
		workerAntiAffinity: true, fetch: true, testPod: true,
	}},
}

// TestChartScenariosCoverValuesFiles: every values file shipped with the
// chart is one of the scenarios.
func TestChartScenariosCoverValuesFiles(t *testing.T) {
	var covered []string
	for _, s := range chartScenarios {
		covered = append(covered, s.files...)
	}
	slices.Sort(covered)
	if diff := cmp.Diff(valuesFiles(t), covered); diff != "" {
		t.Errorf("values files without a scenario, or scenarios without a file (-on disk +scenarios):\n%s", diff)
	}
}

func TestChartRender(t *testing.T) {
	for _, sc := range chartScenarios {
		t.Run(sc.name, func(t *testing.T) {
			m := render(t, sc.files...)
			checkChart(t, m, sc.want)
		})
	}
}

// Names the chart gives the release "mm" (release-chart).
const (
	fullname        = testRelease + "-moemesh"
	coordinatorName = fullname + "-coordinator"
	workerName      = fullname + "-worker"
	etcdName        = fullname + "-etcd"
	svcDomain       = "." + testNamespace + ".svc.cluster.local"
	testPodIP       = "10.1.2.3"
)

func checkChart(t *testing.T, m manifests, w chartWant) {
	endpoints := checkEtcd(t, m, w)
	checkCoordinator(t, m, w, endpoints)
	checkWorkers(t, m, w, endpoints)
	checkHardened(t, m)
	checkExtras(t, m, w)
}

// checkEtcd checks the bundled etcd and returns the client URLs the
// coordinators and workers must be given.
func checkEtcd(t *testing.T, m manifests, w chartWant) []string {
	t.Helper()
	bundled := 0
	for _, s := range m.StatefulSets {
		if s.Name == etcdName {
			bundled++
		}
	}
	if w.externalEtcd != nil {
		if bundled != 0 {
			t.Errorf("an external etcd, yet the chart renders the bundled StatefulSet")
		}
		return w.externalEtcd
	}
	if bundled != 1 {
		t.Fatalf("want the bundled etcd StatefulSet %s", etcdName)
	}
	sts := m.statefulSet(t, etcdName)
	if *sts.Spec.Replicas != 3 {
		t.Errorf("etcd members: %d, want 3", *sts.Spec.Replicas)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("etcd podManagementPolicy %q, want Parallel (members must start together)", sts.Spec.PodManagementPolicy)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().IsZero() {
		t.Errorf("etcd needs one PVC template with a size: %s", jsonOf(sts.Spec.VolumeClaimTemplates))
	}
	svc := m.service(t, sts.Spec.ServiceName)
	if svc.Spec.ClusterIP != "None" || !svc.Spec.PublishNotReadyAddresses || !selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("etcd Service %s must be headless, publish not-ready members and select them: %s", svc.Name, jsonOf(svc.Spec))
	}
	c := sts.Spec.Template.Spec.Containers[0]
	var members, urls []string
	for i := range 3 {
		pod := fmt.Sprintf("%s-%d", etcdName, i)
		host := pod + "." + svc.Name + svcDomain
		members = append(members, fmt.Sprintf("%s=http://%s:2380", pod, host))
		urls = append(urls, fmt.Sprintf("http://%s:2379", host))
		args := expandArgs(t, c, map[string]string{"metadata.name": pod})
		for _, want := range []string{"--name=" + pod, "--advertise-client-urls=http://" + host + ":2379", "--initial-advertise-peer-urls=http://" + host + ":2380"} {
			if !slices.Contains(args, want) {
				t.Errorf("etcd member %d: no %s in %q", i, want, args)
			}
		}
	}
	if want := "--initial-cluster=" + strings.Join(members, ","); !slices.Contains(c.Args, want) {
		t.Errorf("etcd: want %s in %q", want, c.Args)
	}
	checkAntiAffinity(t, "etcd", sts.Spec.Template.Spec, sts.Spec.Template.Labels, true)
	checkPDB(t, m, sts.Spec.Template.Labels, true)
	return urls
}

func checkCoordinator(t *testing.T, m manifests, w chartWant, etcd []string) {
	t.Helper()
	d := m.deployment(t, coordinatorName)
	if *d.Spec.Replicas != 2 {
		t.Errorf("coordinators: %d, want 2", *d.Spec.Replicas)
	}
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	pod := coordinatorName + "-7d9f8-abcde"
	p := parseContainer(t, c, "coordinator", map[string]string{"metadata.name": pod, "status.podIP": testPodIP}, configMapFiles(t, m, spec, c))

	for flag, want := range map[string]string{
		"min-workers": strconv.Itoa(w.workers), "tp": strconv.Itoa(w.tp), "context": strconv.Itoa(w.context),
		"expert-replicas": strconv.Itoa(w.expertReplicas), "expert-spare-slots": strconv.Itoa(w.spareSlots),
		"model": w.modelDir, "id": pod,
	} {
		if got := p.flag(t, flag); got != want {
			t.Errorf("coordinator --%s = %q, want %q", flag, got, want)
		}
	}
	if diff := cmp.Diff(etcd, p.slice(t, "etcd-endpoints")); diff != "" {
		t.Errorf("coordinator --etcd-endpoints (-want +got):\n%s", diff)
	}
	model := fileIn(t, spec, c, w.modelDir+"/config.json")
	if model.Volume.Name != "model" || !model.Mount.ReadOnly {
		t.Errorf("coordinator: --model %s is on volume %q (read-only %v), want the read-only model volume", w.modelDir, model.Volume.Name, model.Mount.ReadOnly)
	}
	grpcPort := containerPort(t, c, "grpc")
	httpPort := containerPort(t, c, "http")
	if got := listenPort(t, p.flag(t, "grpc-addr")); got != grpcPort {
		t.Errorf("coordinator --grpc-addr port %d, container port grpc %d", got, grpcPort)
	}
	if got := listenPort(t, p.flag(t, "http-addr")); got != httpPort {
		t.Errorf("coordinator --http-addr port %d, container port http %d", got, httpPort)
	}
	if got, want := p.flag(t, "gossip-addr"), net.JoinHostPort(testPodIP, strconv.Itoa(int(containerPort(t, c, "gossip")))); got != want {
		t.Errorf("coordinator --gossip-addr %q, want %q", got, want)
	}

	// Readiness = the leader: GET /health on the HTTP port (503 on a
	// standby); liveness must not be a check a standby fails.
	rp := c.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/health" || resolvePort(t, c, rp.HTTPGet.Port) != httpPort {
		t.Errorf("coordinator readiness: want GET /health on port %d: %s", httpPort, jsonOf(rp))
	} else if wantScheme := map[bool]corev1.URIScheme{false: corev1.URISchemeHTTP, true: corev1.URISchemeHTTPS}[w.apiTLS != ""]; rp.HTTPGet.Scheme != wantScheme {
		t.Errorf("coordinator readiness scheme %q, want %q", rp.HTTPGet.Scheme, wantScheme)
	}
	lp := c.LivenessProbe
	if lp == nil || lp.TCPSocket == nil || resolvePort(t, c, lp.TCPSocket.Port) != grpcPort || lp.HTTPGet != nil || lp.GRPC != nil {
		t.Errorf("coordinator liveness: want a TCP check of the gRPC port %d, which standbys pass: %s", grpcPort, jsonOf(lp))
	}
	checkAntiAffinity(t, "coordinator", spec, d.Spec.Template.Labels, true)
	for _, pdb := range m.PDBs {
		if selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("PDB %s covers the coordinators, of which only the leader is ever Ready: it would block drains", pdb.Name)
		}
	}

	// The API Services route to the coordinators' named ports.
	for name, port := range map[string]int32{fullname + "-grpc": grpcPort, fullname + "-http": httpPort} {
		svc := m.service(t, name)
		if !selects(svc.Spec.Selector, d.Spec.Template.Labels) || len(svc.Spec.Ports) != 1 || resolvePort(t, c, svc.Spec.Ports[0].TargetPort) != port {
			t.Errorf("Service %s must select the coordinators and target port %d: %s", name, port, jsonOf(svc.Spec))
		}
	}

	// Secrets: files from Secret volumes, or nothing.
	secretFlag(t, p, spec, c, "api-key-file", w.apiKeys)
	secretFlag(t, p, spec, c, "admin-token-file", w.adminToken)
	secretFlag(t, p, spec, c, "tls-cert", [2]string{w.apiTLS, "tls.crt"})
	secretFlag(t, p, spec, c, "tls-key", [2]string{w.apiTLS, "tls.key"})
	checkClusterSecurity(t, p, spec, c, w, w.clusterTLS[0])
}

func checkWorkers(t *testing.T, m manifests, w chartWant, etcd []string) {
	t.Helper()
	sts := m.statefulSet(t, workerName)
	if got, want := int(*sts.Spec.Replicas), w.workers+w.spares; got != want {
		t.Fatalf("worker replicas %d, want %d (layout %d + spares %d)", got, want, w.workers, w.spares)
	}
	svc := m.service(t, sts.Spec.ServiceName)
	if svc.Spec.ClusterIP != "None" || !svc.Spec.PublishNotReadyAddresses || !selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("worker Service %s must be headless, publish not-ready workers and select them: %s", svc.Name, jsonOf(svc.Spec))
	}
	spec := sts.Spec.Template.Spec
	c := spec.Containers[0]
	port := containerPort(t, c, "grpc")
	var ids []string
	for n := range w.workers + w.spares {
		pod := fmt.Sprintf("%s-%d", sts.Name, n)
		p := parseContainer(t, c, "worker", map[string]string{"metadata.name": pod, "status.podIP": testPodIP}, configMapFiles(t, m, spec, c))
		ids = append(ids, p.flag(t, "id"))
		if got, want := p.flag(t, "advertise"), fmt.Sprintf("%s.%s%s:%d", pod, svc.Name, svcDomain, port); got != want {
			t.Errorf("worker %d --advertise %q, want %q (its stable DNS name)", n, got, want)
		}
		if n > 0 {
			continue // the rest is the same for every ordinal
		}
		if got := listenPort(t, p.flag(t, "listen")); got != port {
			t.Errorf("worker --listen port %d, container port %d", got, port)
		}
		if got, want := p.flag(t, "gossip-addr"), net.JoinHostPort(testPodIP, strconv.Itoa(int(containerPort(t, c, "gossip")))); got != want {
			t.Errorf("worker --gossip-addr %q, want %q", got, want)
		}
		if got := p.flag(t, "device"); got != w.device {
			t.Errorf("worker --device %q, want %q", got, w.device)
		}
		roots := p.slice(t, "model-root")
		if len(roots) != 1 || !strings.HasPrefix(w.modelDir, roots[0]+"/") {
			t.Errorf("worker --model-root %q must be one root holding %s", roots, w.modelDir)
		} else if f := fileIn(t, spec, c, w.modelDir+"/config.json"); f.Volume.Name != "model" || !f.Mount.ReadOnly {
			t.Errorf("worker: the model is on volume %q (read-only %v), want the read-only model volume", f.Volume.Name, f.Mount.ReadOnly)
		}
		if diff := cmp.Diff(etcd, p.slice(t, "etcd-endpoints")); diff != "" {
			t.Errorf("worker --etcd-endpoints (-want +got):\n%s", diff)
		}
		checkClusterSecurity(t, p, spec, c, w, w.clusterTLS[1])
	}
	var wantIDs []string
	for n := range w.workers + w.spares {
		wantIDs = append(wantIDs, fmt.Sprintf("%s-%d", workerName, n))
	}
	if diff := cmp.Diff(wantIDs, ids); diff != "" {
		t.Errorf("worker ids by ordinal (-want +got):\n%s", diff)
	}

	// GPUs and memory.
	gpu := corev1.ResourceName("nvidia.com/gpu")
	for what, list := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
		q, ok := list[gpu]
		if w.gpus == 0 && ok {
			t.Errorf("worker %s: %s %v on a CPU layout", what, gpu, q.String())
		}
		if w.gpus > 0 && (!ok || q.Value() != w.gpus) {
			t.Errorf("worker %s: %s = %v, want %d", what, gpu, q.String(), w.gpus)
		}
	}
	memReq, memLim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	if memReq.IsZero() || memReq.Cmp(*memLim) != 0 {
		t.Errorf("worker memory request %v and limit %v: want both, equal (the planner sizes against the limit)", memReq, memLim)
	}
	if w.shape != nil {
		checkWorkerMemory(t, *w.shape, w, memLim.Value(), w.gpus > 0)
	}

	for name, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if pr == nil || pr.TCPSocket == nil || resolvePort(t, c, pr.TCPSocket.Port) != port {
			t.Errorf("worker %s probe: want a TCP check of port %d: %s", name, port, jsonOf(pr))
		}
	}
	checkAntiAffinity(t, "worker", spec, sts.Spec.Template.Labels, w.workerAntiAffinity)
	checkPDB(t, m, sts.Spec.Template.Labels, true)
	if got := len(spec.InitContainers) == 1 && spec.InitContainers[0].Name == "fetch-model"; got != w.fetch {
		t.Errorf("worker fetch-model init container: %v, want %v", got, w.fetch)
	}
}

// checkWorkerMemory checks the derived memory limit against the sharding
// memory model: the largest worker's weights, its spare expert slots and its
// float32 KV cache for the group's context, plus at most 4 GiB; on a GPU the
// same must fit in 80 GB.
func checkWorkerMemory(t *testing.T, shape sharding.ModelShape, w chartWant, limit int64, gpu bool) {
	t.Helper()
	layout, err := sharding.NewLayout(w.workers, w.tp)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := sharding.PlaceExperts(shape.Experts, w.workers, w.expertReplicas, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := sharding.PlanMemory(shape, layout, pl, w.context)
	if err != nil {
		t.Fatal(err)
	}
	var need int64
	for _, mw := range plan {
		kvF32 := mw.KVCache / int64(shape.BytesPerParam) * 4
		spare := int64(w.spareSlots) * shape.ExpertParams() * int64(shape.MoELayers()) * int64(shape.BytesPerParam)
		need = max(need, mw.Weights+spare+kvF32)
	}
	if limit < need || limit > need+4<<30 {
		t.Errorf("worker memory limit %.2f GiB; the memory model needs %.2f GiB (want at most 4 GiB above)", float64(limit)/(1<<30), float64(need)/(1<<30))
	}
	if gpu && need > 80e9*9/10 {
		t.Errorf("a worker needs %.1f GB, more than 90%% of an 80 GB GPU", float64(need)/1e9)
	}
}

// checkClusterSecurity checks the etcd and cluster-TLS flags of a
// coordinator or worker against the scenario.
func checkClusterSecurity(t *testing.T, p parsedCommand, spec corev1.PodSpec, c corev1.Container, w chartWant, clusterSecret string) {
	t.Helper()
	name := p.Cmd.Name()
	if clusterSecret == "" {
		if p.changed("cluster-tls-dir") {
			t.Errorf("%s: --cluster-tls-dir without a Secret", name)
		}
	} else {
		dir := p.flag(t, "cluster-tls-dir")
		for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
			secretFile(t, spec, c, dir+"/"+f, clusterSecret, f)
		}
	}
	secretFlag(t, p, spec, c, "gossip-key-file", w.gossipKey)
	secretFlag(t, p, spec, c, "etcd-cacert", [2]string{w.etcdTLS, "ca.crt"})
	secretFlag(t, p, spec, c, "etcd-cert", [2]string{w.etcdTLS, "tls.crt"})
	secretFlag(t, p, spec, c, "etcd-key", [2]string{w.etcdTLS, "tls.key"})
	if got := p.flag(t, "etcd-user"); got != w.etcdUser {
		t.Errorf("%s --etcd-user %q, want %q", name, got, w.etcdUser)
	}
	var pw *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == etcdPasswordEnv {
			pw = &c.Env[i]
		}
	}
	switch {
	case w.etcdPassword[0] == "" && pw != nil:
		t.Errorf("%s: $%s without an etcd user", name, etcdPasswordEnv)
	case w.etcdPassword[0] != "" && (pw == nil || pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil ||
		pw.ValueFrom.SecretKeyRef.Name != w.etcdPassword[0] || pw.ValueFrom.SecretKeyRef.Key != w.etcdPassword[1]):
		t.Errorf("%s: $%s must come from Secret %v: %s", name, etcdPasswordEnv, w.etcdPassword, jsonOf(pw))
	}
}

// secretFlag checks that file flag name is key want[1] of Secret want[0],
// or unset when want[0] is empty.
func secretFlag(t *testing.T, p parsedCommand, spec corev1.PodSpec, c corev1.Container, name string, want [2]string) {
	t.Helper()
	if want[0] == "" {
		if p.changed(name) {
			t.Errorf("%s --%s=%s without a Secret in the values", p.Cmd.Name(), name, p.flag(t, name))
		}
		return
	}
	if !p.changed(name) {
		t.Errorf("%s: no --%s, want key %s of Secret %s", p.Cmd.Name(), name, want[1], want[0])
		return
	}
	secretFile(t, spec, c, p.flag(t, name), want[0], want[1])
}

// checkAntiAffinity checks for (or against) a node anti-affinity term that
// selects the pod's own labels.
func checkAntiAffinity(t *testing.T, what string, spec corev1.PodSpec, labels map[string]string, want bool) {
	t.Helper()
	var terms []corev1.PodAffinityTerm
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		terms = append(terms, a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
		for _, wt := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			terms = append(terms, wt.PodAffinityTerm)
		}
	}
	got := false
	for _, term := range terms {
		if term.TopologyKey == "kubernetes.io/hostname" && term.LabelSelector != nil && selects(term.LabelSelector.MatchLabels, labels) {
			got = true
		}
	}
	if got != want {
		t.Errorf("%s: node anti-affinity among its pods %v, want %v: %s", what, got, want, jsonOf(spec.Affinity))
	}
}

// checkPDB checks that one PodDisruptionBudget with maxUnavailable 1 covers
// the pods with labels.
func checkPDB(t *testing.T, m manifests, labels map[string]string, want bool) {
	t.Helper()
	var n int
	for _, pdb := range m.PDBs {
		if selects(pdb.Spec.Selector.MatchLabels, labels) {
			n++
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
				t.Errorf("PDB %s: maxUnavailable %v, want 1", pdb.Name, pdb.Spec.MaxUnavailable)
			}
		}
	}
	if (n == 1) != want {
		t.Errorf("%d PDBs cover pods %v, want %v", n, labels, want)
	}
}

// checkHardened checks every pod and container of the release.
func checkHardened(t *testing.T, m manifests) {
	t.Helper()
	secretish := []string{"KEY", "TOKEN", "PASSWORD", "SECRET"}
	for owner, spec := range m.podSpecs() {
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod security context %s, want runAsNonRoot and seccomp RuntimeDefault", owner, jsonOf(psc))
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: the service account token is mounted; nothing here talks to the Kubernetes API", owner)
		}
		// Service links would put MOEMESH_<SERVICE>_PORT variables in the
		// environment, which the program reads as flags.
		if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
			t.Errorf("%s: enableServiceLinks must be false", owner)
		}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
				(sc.Privileged != nil && *sc.Privileged) ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s/%s: security context %s, want read-only root, no privilege escalation, non-root, all capabilities dropped", owner, c.Name, jsonOf(sc))
			}
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, envPrefix) && !slices.Contains(nonFlagEnv, e.Name) {
					t.Errorf("%s/%s: env %s: flags go on the command line or in the config file", owner, c.Name, e.Name)
				}
				for _, s := range secretish {
					if strings.Contains(strings.ToUpper(e.Name), s) && e.ValueFrom == nil {
						t.Errorf("%s/%s: env %s has an inline value; secrets come from Secrets", owner, c.Name, e.Name)
					}
				}
			}
		}
	}
}

// checkExtras checks the optional resources: ServiceMonitor, NetworkPolicy
// and the helm test pod.
func checkExtras(t *testing.T, m manifests, w chartWant) {
	t.Helper()
	if got := len(m.Unstructured) == 1; got != w.serviceMonitor {
		t.Errorf("ServiceMonitor rendered: %v, want %v", got, w.serviceMonitor)
	}
	if w.serviceMonitor && len(m.Unstructured) == 1 {
		checkServiceMonitor(t, m, m.Unstructured[0])
	}
	wantPolicies := 0
	if w.networkPolicy {
		wantPolicies = 3
		if w.externalEtcd != nil {
			wantPolicies = 2
		}
	}
	if len(m.NetworkPolicies) != wantPolicies {
		t.Errorf("%d NetworkPolicies, want %d", len(m.NetworkPolicies), wantPolicies)
	}
	worker := m.statefulSet(t, workerName)
	for _, np := range m.NetworkPolicies {
		if !selects(np.Spec.PodSelector.MatchLabels, worker.Spec.Template.Labels) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.From) == 0 {
				t.Errorf("NetworkPolicy %s lets anyone reach the workers", np.Name)
			}
			for _, from := range rule.From {
				if from.PodSelector == nil || from.NamespaceSelector != nil || from.IPBlock != nil || from.PodSelector.MatchLabels["app.kubernetes.io/instance"] != testRelease {
					t.Errorf("NetworkPolicy %s: workers reachable from %s, want this release's pods only", np.Name, jsonOf(from))
				}
			}
		}
	}

	if got := len(m.Pods) == 1; got != w.testPod {
		t.Fatalf("helm test pod rendered: %v, want %v", got, w.testPod)
	}
	if !w.testPod {
		return
	}
	tp := m.Pods[0]
	if tp.Annotations["helm.sh/hook"] != "test" || tp.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test pod %s: hook %q, restart %q; want a test hook that runs once", tp.Name, tp.Annotations["helm.sh/hook"], tp.Spec.RestartPolicy)
	}
	p := parseContainer(t, tp.Spec.Containers[0], "generate", nil, nil)
	host, port, err := net.SplitHostPort(p.flag(t, "server"))
	if err != nil {
		t.Fatalf("test pod --server: %v", err)
	}
	svc := m.service(t, fullname+"-grpc")
	if host != svc.Name+svcDomain || port != strconv.Itoa(int(svc.Spec.Ports[0].Port)) {
		t.Errorf("test pod --server %s:%s, want the gRPC Service %s%s:%d", host, port, svc.Name, svcDomain, svc.Spec.Ports[0].Port)
	}
	if p.flag(t, "greedy") != "true" {
		t.Errorf("test pod: want a --greedy completion")
	}
}

func checkServiceMonitor(t *testing.T, m manifests, sm map[string]any) {
	t.Helper()
	spec, _ := sm["spec"].(map[string]any)
	sel, _ := spec["selector"].(map[string]any)
	ml := map[string]string{}
	if raw, ok := sel["matchLabels"].(map[string]any); ok {
		for k, v := range raw {
			ml[k], _ = v.(string)
		}
	}
	httpSvc := m.service(t, fullname+"-http")
	if !selects(ml, httpSvc.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select Service %s (labels %v)", ml, httpSvc.Name, httpSvc.Labels)
	}
	eps, _ := spec["endpoints"].([]any)
	if len(eps) != 1 {
		t.Fatalf("ServiceMonitor endpoints: %v", eps)
	}
	ep, _ := eps[0].(map[string]any)
	if ep["port"] != httpSvc.Spec.Ports[0].Name || ep["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoint %v, want port %q path /metrics", ep, httpSvc.Spec.Ports[0].Name)
	}
}

// listenPort is the port of a host:port flag.
func listenPort(t testing.TB, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// resolvePort is a probe's or Service's port: a number, or a name of c.
func resolvePort(t testing.TB, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	return containerPort(t, c, p.StrVal)
}
