{{/* Names, labels and the derived settings of the moemesh chart. */}}

{{- define "moemesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: release-chart, or the release name when it already holds the
chart's name. Truncated to 40 characters so that suffixed names
(-coordinator, -worker-N and the like) stay within 63.
*/}}
{{- define "moemesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "moemesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; include with a component: (dict "ctx" . "component" "worker"). */}}
{{- define "moemesh.labels" -}}
helm.sh/chart: {{ include "moemesh.chart" .ctx }}
{{ include "moemesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: moemesh
{{- end }}

{{- define "moemesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "moemesh.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "moemesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "moemesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "moemesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "moemesh.workerService" -}}
{{- printf "%s-worker" (include "moemesh.fullname" .) }}
{{- end }}

{{- define "moemesh.etcdService" -}}
{{- printf "%s-etcd" (include "moemesh.fullname" .) }}
{{- end }}

{{/* The model directory every process sees (the coordinator's --model). */}}
{{- define "moemesh.modelDir" -}}
{{- printf "%s/%s" (.Values.model.mountPath | trimSuffix "/") (.Values.model.dir | trimPrefix "/") }}
{{- end }}

{{/* etcd client URLs, comma-separated (--etcd-endpoints). */}}
{{- define "moemesh.etcdEndpoints" -}}
{{- if eq .Values.etcd.mode "external" }}
{{- if not .Values.etcd.external.endpoints }}
{{- fail "etcd.mode external needs etcd.external.endpoints" }}
{{- end }}
{{- join "," .Values.etcd.external.endpoints }}
{{- else }}
{{- $svc := include "moemesh.etcdService" . }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.bundled.replicas) }}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:%d" $svc $i $svc $.Release.Namespace $.Values.clusterDomain (int $.Values.etcd.bundled.clientPort)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}
{{- end }}

{{/* The worker's --device. */}}
{{- define "moemesh.workerDevice" -}}
{{- if eq .Values.worker.device "auto" }}
{{- if gt (int .Values.worker.gpus) 0 }}cuda:0{{ else }}cpu{{ end }}
{{- else }}
{{- .Values.worker.device }}
{{- end }}
{{- end }}

{{/*
Memory of one worker in MiB, from the layout and the sizing values (see
values.yaml and docs/deploy.md): the largest expert share, the TP share of
attention and embeddings, the replicated routers, the float32 KV cache of
the worker's KV heads for the group's context, and the overhead.
*/}}
{{- define "moemesh.workerMemoryMiB" -}}
{{- $l := .Values.layout }}
{{- $s := .Values.sizing }}
{{- $workers := int $l.workers }}
{{- $tp := int $l.tp }}
{{- $slots := add (div (sub (add (int $s.experts) (int $l.expertReplicas) $workers) 1) $workers) (int $l.expertSpareSlots) }}
{{- $kvHeads := max 1 (div (int $s.kvHeads) $tp) }}
{{- $gib := addf (mulf $slots $s.expertGiB) (divf $s.sharedGiB $tp) $s.replicatedGiB $s.overheadGiB }}
{{- $kvMiB := divf (mulf (int $l.context) $kvHeads (int $s.kvBytesPerHeadToken)) 1048576 }}
{{- ceil (addf (mulf $gib 1024) $kvMiB) | int }}
{{- end }}

{{/* The worker's resources: the given ones, the derived memory and the GPUs. */}}
{{- define "moemesh.workerResources" -}}
{{- $r := deepCopy (default dict .Values.worker.resources) }}
{{- $req := default dict (get $r "requests") }}
{{- $lim := default dict (get $r "limits") }}
{{- if not (or (hasKey $req "memory") (hasKey $lim "memory")) }}
{{- $mem := printf "%sMi" (include "moemesh.workerMemoryMiB" .) }}
{{- $_ := set $req "memory" $mem }}
{{- $_ := set $lim "memory" $mem }}
{{- end }}
{{- if gt (int .Values.worker.gpus) 0 }}
{{- $_ := set $req .Values.worker.gpuResource (int .Values.worker.gpus) }}
{{- $_ := set $lim .Values.worker.gpuResource (int .Values.worker.gpus) }}
{{- end }}
{{- $_ := set $r "requests" $req }}
{{- $_ := set $r "limits" $lim }}
{{- toYaml $r }}
{{- end }}

{{/* Pod anti-affinity on the node: (dict "mode" soft|hard|none "ctx" . "component" c). */}}
{{- define "moemesh.antiAffinity" -}}
{{- if eq .mode "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "moemesh.selectorLabels" . | nindent 12 }}
{{- else if eq .mode "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "moemesh.selectorLabels" . | nindent 14 }}
{{- end }}
{{- end }}

{{/* The pod's security context: non-root, the image's uid, RuntimeDefault seccomp. */}}
{{- define "moemesh.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "moemesh.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop:
      - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* The model volume (named "model"). */}}
{{- define "moemesh.modelVolume" -}}
{{- $v := .Values.model.volume }}
- name: model
{{- if eq $v.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ required "model.volume.pvc.claimName is required with model.volume.type pvc" $v.pvc.claimName }}
{{- else if eq $v.type "hostPath" }}
  hostPath:
    path: {{ required "model.volume.hostPath.path is required" $v.hostPath.path }}
    type: {{ if .Values.model.fetch.enabled }}DirectoryOrCreate{{ else }}Directory{{ end }}
{{- else if eq $v.type "image" }}
  image:
    reference: {{ required "model.volume.image.reference is required with model.volume.type image" $v.image.reference }}
    pullPolicy: {{ $v.image.pullPolicy }}
{{- else if eq $v.type "emptyDir" }}
  emptyDir:
    {{- if $v.emptyDir.sizeLimit }}
    sizeLimit: {{ $v.emptyDir.sizeLimit }}
    {{- else }} {}
    {{- end }}
{{- end }}
{{- end }}

{{/* The optional init container that fetches the model. */}}
{{- define "moemesh.fetchInit" -}}
{{- if .Values.model.fetch.enabled }}
{{- if eq .Values.model.volume.type "image" }}
{{- fail "model.fetch needs a writable model volume (pvc, hostPath or emptyDir), not an image volume" }}
{{- end }}
initContainers:
  - name: fetch-model
    image: {{ default (include "moemesh.image" .) .Values.model.fetch.image }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    {{- with .Values.model.fetch.command }}
    command:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.model.fetch.args }}
    args:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.model.fetch.env }}
    env:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.model.fetch.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- include "moemesh.containerSecurityContext" . | nindent 4 }}
    volumeMounts:
      - name: model
        mountPath: {{ .Values.model.mountPath }}
      - name: tmp
        mountPath: /tmp
{{- end }}
{{- end }}

{{/* Flags and mounts shared by coordinators and workers: etcd and cluster security. */}}
{{- define "moemesh.etcdArgs" -}}
- --etcd-endpoints={{ include "moemesh.etcdEndpoints" . }}
- --etcd-prefix={{ .Values.etcd.prefix }}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.tlsSecret }}
- --etcd-cacert=/etc/moemesh/etcd-tls/ca.crt
- --etcd-cert=/etc/moemesh/etcd-tls/tls.crt
- --etcd-key=/etc/moemesh/etcd-tls/tls.key
{{- end }}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.user }}
- --etcd-user={{ .Values.etcd.external.user }}
{{- end }}
{{- if .Values.clusterTLS.gossipKey.existingSecret }}
- --gossip-key-file=/etc/moemesh/gossip/{{ .Values.clusterTLS.gossipKey.key }}
{{- end }}
{{- end }}

{{- define "moemesh.etcdEnv" -}}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.user }}
{{- if not .Values.etcd.external.passwordSecret.name }}
{{- fail "etcd.external.user needs etcd.external.passwordSecret.name" }}
{{- end }}
- name: MOEMESH_ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.etcd.external.passwordSecret.name }}
      key: {{ .Values.etcd.external.passwordSecret.key }}
{{- end }}
{{- end }}

{{- define "moemesh.commonMounts" -}}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.tlsSecret }}
- name: etcd-tls
  mountPath: /etc/moemesh/etcd-tls
  readOnly: true
{{- end }}
{{- if .Values.clusterTLS.gossipKey.existingSecret }}
- name: gossip-key
  mountPath: /etc/moemesh/gossip
  readOnly: true
{{- end }}
{{- end }}

{{- define "moemesh.commonVolumes" -}}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.tlsSecret }}
- name: etcd-tls
  secret:
    secretName: {{ .Values.etcd.external.tlsSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.clusterTLS.gossipKey.existingSecret }}
- name: gossip-key
  secret:
    secretName: {{ .Values.clusterTLS.gossipKey.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.clusterTLS.gossipKey.key }}
        path: {{ .Values.clusterTLS.gossipKey.key }}
{{- end }}
{{- end }}

{{/* Checks that hold across values. */}}
{{- define "moemesh.validate" -}}
{{- if ne (mod (int .Values.layout.workers) (int .Values.layout.tp)) 0 }}
{{- fail (printf "layout.tp %d must divide layout.workers %d" (int .Values.layout.tp) (int .Values.layout.workers)) }}
{{- end }}
{{- if and .Values.clusterTLS.coordinatorSecret (not .Values.clusterTLS.workerSecret) }}
{{- fail "clusterTLS.coordinatorSecret and clusterTLS.workerSecret go together" }}
{{- end }}
{{- if and .Values.clusterTLS.workerSecret (not .Values.clusterTLS.coordinatorSecret) }}
{{- fail "clusterTLS.coordinatorSecret and clusterTLS.workerSecret go together" }}
{{- end }}
{{- end }}
