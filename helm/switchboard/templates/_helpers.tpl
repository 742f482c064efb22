{{/*
Names, labels and the pieces the router and worker templates share.
*/}}

{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries (commonLabels cannot replace these). Call with (dict "ctx" $ "component" "router"). */}}
{{- define "switchboard.labels" -}}
{{- $ctx := .ctx -}}
{{- $labels := deepCopy (default dict $ctx.Values.commonLabels) -}}
{{- $_ := set $labels "helm.sh/chart" (include "switchboard.chart" $ctx) -}}
{{- $_ = set $labels "app.kubernetes.io/name" (include "switchboard.name" $ctx) -}}
{{- $_ = set $labels "app.kubernetes.io/instance" $ctx.Release.Name -}}
{{- $_ = set $labels "app.kubernetes.io/version" ((default $ctx.Chart.AppVersion .version) | replace "+" "_" | trunc 63) -}}
{{- $_ = set $labels "app.kubernetes.io/component" .component -}}
{{- $_ = set $labels "app.kubernetes.io/part-of" "switchboard" -}}
{{- $_ = set $labels "app.kubernetes.io/managed-by" $ctx.Release.Service -}}
{{- if .version -}}
{{- $_ = set $labels "switchboard.io/version" .version -}}
{{- end -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* A pod template's labels: its own podLabels, then the chart's (which win). (dict "ctx" $ "component" "worker" "version" "1.5.0" "podLabels" {...}) */}}
{{- define "switchboard.podLabels" -}}
{{- $labels := fromYaml (include "switchboard.labels" .) -}}
{{- toYaml (merge $labels (deepCopy (default dict .podLabels))) -}}
{{- end -}}

{{/* Selector labels: stable across chart versions and upgrades. (dict "ctx" $ "component" "router") */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A worker version's selector labels. (dict "ctx" $ "version" "1.5.0") */}}
{{- define "switchboard.workerSelectorLabels" -}}
{{ include "switchboard.selectorLabels" (dict "ctx" .ctx "component" "worker") }}
switchboard.io/version: {{ .version | quote }}
{{- end -}}

{{- define "switchboard.routerName" -}}
{{- printf "%s-router" (include "switchboard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.gatewayName" -}}
{{- printf "%s-gateway" (include "switchboard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The gateway's Ingress host: gateway.ingress.host, else the host of gateway.publicURL (without a port). ($) */}}
{{- define "switchboard.gatewayHost" -}}
{{- $g := .Values.gateway -}}
{{- if $g.ingress.host -}}
{{- $g.ingress.host -}}
{{- else if $g.publicURL -}}
{{- regexReplaceAll ":[0-9]+$" (urlParse $g.publicURL).host "" -}}
{{- end -}}
{{- end -}}

{{/* The gateway's --public-url: gateway.publicURL, else https://<ingress host> (http:// without TLS) when the Ingress is on, else empty. ($) */}}
{{- define "switchboard.gatewayPublicURL" -}}
{{- $g := .Values.gateway -}}
{{- if $g.publicURL -}}
{{- $g.publicURL -}}
{{- else if $g.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" $g.ingress.tls.enabled) (include "switchboard.gatewayHost" .) -}}
{{- end -}}
{{- end -}}

{{/* A worker version's Deployment name: 1.5.0 -> <fullname>-worker-1-5-0. (dict "ctx" $ "version" "1.5.0") */}}
{{- define "switchboard.workerName" -}}
{{- $suffix := .version | lower | replace "." "-" | replace "_" "-" -}}
{{- printf "%s-worker-%s" (include "switchboard.fullname" .ctx) $suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.adminSecretName" -}}
{{- if .Values.adminKeys.existingSecret -}}
{{- .Values.adminKeys.existingSecret -}}
{{- else -}}
{{- printf "%s-admin-keys" (include "switchboard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* An image reference. (dict "image" <repository/tag/digest> "ctx" $) */}}
{{- define "switchboard.image" -}}
{{- $ctx := .ctx -}}
{{- $repository := default $ctx.Values.image.repository .image.repository -}}
{{- $digest := default $ctx.Values.image.digest .image.digest -}}
{{- if $digest -}}
{{- printf "%s@%s" $repository $digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default (default $ctx.Chart.AppVersion $ctx.Values.image.tag) .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The pod security context every pod runs with (the image's numeric user). */}}
{{- define "switchboard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container security context every container runs with. */}}
{{- define "switchboard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* The NATS credential file's key for a role. (dict "ctx" $ "role" "router") */}}
{{- define "switchboard.natsCredentialKey" -}}
{{- $auth := .ctx.Values.nats.auth -}}
{{- if include "switchboard.mintsCredentials" . -}}
{{ .role }}.creds
{{- else -}}
{{- $given := get (dict "router" $auth.routerKey "worker" $auth.workerKey "gateway" $auth.gatewayKey) .role -}}
{{- default (printf "%s.%s" .role (ternary "creds" "nk" (eq $auth.kind "creds"))) $given -}}
{{- end -}}
{{- end -}}

{{/* A member role's signing key in nats.auth (workerSigningKey, gatewaySigningKey); empty for the routers. (dict "ctx" $ "role" "worker") */}}
{{- define "switchboard.signingKey" -}}
{{- $auth := .ctx.Values.nats.auth -}}
{{- get (dict "worker" $auth.workerSigningKey "gateway" $auth.gatewaySigningKey) .role | default "" -}}
{{- end -}}

{{/* "true" when each pod of a member role (worker, gateway) mints its own NATS credential at start. (dict "ctx" $ "role" "worker") */}}
{{- define "switchboard.mintsCredentials" -}}
{{- $auth := .ctx.Values.nats.auth -}}
{{- if and $auth.existingSecret (eq $auth.kind "creds") (include "switchboard.signingKey" .) -}}true{{- end -}}
{{- end -}}

{{/* "true" when each worker pod mints its own NATS credential at start (nats.auth.workerSigningKey). ($) */}}
{{- define "switchboard.workersMintCredentials" -}}
{{- include "switchboard.mintsCredentials" (dict "ctx" . "role" "worker") -}}
{{- end -}}

{{/*
The init container that mints a worker's or gateway's own NATS credential (its id is the pod's name): only that
member's subjects. The signing key is mounted here alone; the main container gets the credential, never the key.
(dict "ctx" $ "role" "worker" "image" "<image reference>")
*/}}
{{- define "switchboard.natsCredentialInitContainer" -}}
{{- $ctx := .ctx -}}
- name: nats-credential
  image: {{ .image | quote }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args:
    - nats-credential
    - --signing-key
    - {{ printf "/etc/switchboard/nats-signing/%s" (include "switchboard.signingKey" .) | quote }}
    - --id
    - $(POD_NAME)
    - --prefix
    - {{ $ctx.Values.nats.subjectPrefix | quote }}
    - --out
    - {{ printf "/etc/switchboard/nats/%s.creds" .role }}
    - --force
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
  securityContext:
    {{- include "switchboard.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - name: nats-signing
      mountPath: /etc/switchboard/nats-signing
      readOnly: true
    - name: nats-credentials
      mountPath: /etc/switchboard/nats
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/*
Environment shared by routers, workers and gateways: cluster addresses, prefixes, credentials, HTTP, identity.
Gateways get the Redis settings only with gateway.timeline "redis" (they write call timelines there); with "off"
they reach the cluster over NATS alone. (dict "ctx" $ "role" "router" "logLevel" "..." "httpPort" 8090;
httpPort defaults to 8080)
*/}}
{{- define "switchboard.clusterEnv" -}}
{{- $v := .ctx.Values -}}
{{- $redis := eq (include "switchboard.usesRedis" (dict "ctx" .ctx "component" .role)) "true" -}}
- name: SWITCHBOARD_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SWITCHBOARD_NATS_URL
  value: {{ $v.nats.url | quote }}
{{- if $redis }}
- name: SWITCHBOARD_REDIS_URL
  value: {{ $v.redis.url | quote }}
{{- end }}
- name: SWITCHBOARD_PREFIX
  value: {{ $v.nats.subjectPrefix | quote }}
{{- if $redis }}
- name: SWITCHBOARD_KEY_PREFIX
  value: {{ $v.redis.keyPrefix | quote }}
{{- end }}
- name: SWITCHBOARD_LOG_LEVEL
  value: {{ default $v.logLevel .logLevel | quote }}
{{- if and $redis (not (kindIs "invalid" $v.redis.replicasToAck)) }}
- name: SWITCHBOARD_REDIS_REPLICAS_TO_ACK
  value: {{ $v.redis.replicasToAck | toString | quote }}
{{- end }}
- name: SWITCHBOARD_HTTP_HOST
  value: "0.0.0.0"
- name: SWITCHBOARD_HTTP_PORT
  value: {{ default 8080 .httpPort | toString | quote }}
{{- if $v.nats.auth.existingSecret }}
{{- if eq $v.nats.auth.kind "creds" }}
- name: SWITCHBOARD_NATS_CREDS
{{- else }}
- name: SWITCHBOARD_NATS_NKEY
{{- end }}
  value: {{ printf "/etc/switchboard/nats/%s" (include "switchboard.natsCredentialKey" .) | quote }}
{{- end }}
{{- with $v.nats.tls }}
{{- if .existingSecret }}
{{- if .caKey }}
- name: SWITCHBOARD_NATS_TLS_CA
  value: {{ printf "/etc/switchboard/nats-tls/%s" .caKey | quote }}
{{- end }}
{{- if .certKey }}
- name: SWITCHBOARD_NATS_TLS_CERT
  value: {{ printf "/etc/switchboard/nats-tls/%s" .certKey | quote }}
- name: SWITCHBOARD_NATS_TLS_KEY
  value: {{ printf "/etc/switchboard/nats-tls/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with (ternary $v.redis.auth dict $redis) }}
{{- if and .existingSecret .passwordKey }}
- name: SWITCHBOARD_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- if and .existingSecret .sentinelPasswordKey }}
- name: SWITCHBOARD_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .sentinelPasswordKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes for NATS credentials and TLS. (dict "ctx" $ "role" "router") */}}
{{- define "switchboard.natsVolumes" -}}
{{- $v := .ctx.Values -}}
{{- if include "switchboard.mintsCredentials" . }}
{{- $key := include "switchboard.signingKey" . }}
# The {{ .role }} signing key, for the init container alone; the {{ .role }}'s own credential, minted into memory.
- name: nats-signing
  secret:
    secretName: {{ $v.nats.auth.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $key }}
        path: {{ $key }}
- name: nats-credentials
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- else if $v.nats.auth.existingSecret }}
- name: nats-credentials
  secret:
    secretName: {{ $v.nats.auth.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ include "switchboard.natsCredentialKey" . }}
        path: {{ include "switchboard.natsCredentialKey" . }}
{{- if and (eq .role "router") (eq $v.nats.auth.kind "creds") $v.nats.auth.mediaSigningKey }}
      - key: {{ $v.nats.auth.mediaSigningKey }}
        path: {{ $v.nats.auth.mediaSigningKey }}
{{- end }}
{{- end }}
{{- if $v.nats.tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ $v.nats.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "switchboard.natsVolumeMounts" -}}
{{- $v := .ctx.Values -}}
{{- if $v.nats.auth.existingSecret }}
- name: nats-credentials
  mountPath: /etc/switchboard/nats
  readOnly: true
{{- end }}
{{- if $v.nats.tls.existingSecret }}
- name: nats-tls
  mountPath: /etc/switchboard/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The PromQL label matchers of a worker version's desired-workers series. (dict "ctx" $ "version" "1.5.0") */}}
{{- define "switchboard.desiredMatchers" -}}
{{- $a := .ctx.Values.workers.autoscaling -}}
{{- $m := list (printf "version=%q" .version) -}}
{{- if $a.matchNamespace -}}
{{- $m = append $m (printf "namespace=%q" .ctx.Release.Namespace) -}}
{{- end -}}
{{- range $k, $val := $a.extraLabelMatchers -}}
{{- $m = append $m (printf "%s=%q" $k (toString $val)) -}}
{{- end -}}
{{- join "," $m -}}
{{- end -}}

{{/*
A worker version with the shared defaults filled in, as YAML (fromYaml it). Fails on settings the schema
cannot check: a grace period too short for the drain, a minimum above the maximum, and the like.
(dict "ctx" $ "spec" <one entry of workers.versions>)
*/}}
{{- define "switchboard.workerVersion" -}}
{{- $w := .ctx.Values.workers -}}
{{- $s := .spec -}}
{{- $drain := int (ternary $s.drainDeadlineSeconds $w.drainDeadlineSeconds (hasKey $s "drainDeadlineSeconds")) -}}
{{- $grace := int (ternary $s.terminationGracePeriodSeconds $w.terminationGracePeriodSeconds (hasKey $s "terminationGracePeriodSeconds")) -}}
{{- if lt $grace (add $drain 60) -}}
{{- fail (printf "workers.versions[%s]: terminationGracePeriodSeconds (%d) must be at least drainDeadlineSeconds (%d) + 60, or the kubelet kills the worker while its calls still move" $s.version $grace $drain) -}}
{{- end -}}
{{- /* Key by key: merge would take a version's 0 or false for "not set". */ -}}
{{- $auto := dict "enabled" false "provider" $w.autoscaling.provider "minReplicas" $w.autoscaling.minReplicas "maxReplicas" $w.autoscaling.maxReplicas -}}
{{- range $key, $value := (default dict $s.autoscaling) -}}
{{- $_ := set $auto $key $value -}}
{{- end -}}
{{- if $auto.enabled -}}
{{- if gt (int $auto.minReplicas) (int $auto.maxReplicas) -}}
{{- fail (printf "workers.versions[%s].autoscaling: minReplicas (%d) is above maxReplicas (%d)" $s.version (int $auto.minReplicas) (int $auto.maxReplicas)) -}}
{{- end -}}
{{- if and (eq $auto.provider "prometheus-adapter") (lt (int $auto.minReplicas) 1) -}}
{{- fail (printf "workers.versions[%s].autoscaling: an HPA cannot scale to zero (minReplicas %d); use provider keda, or remove the version when it is done" $s.version (int $auto.minReplicas)) -}}
{{- end -}}
{{- end -}}
version: {{ $s.version | quote }}
name: {{ include "switchboard.workerName" (dict "ctx" .ctx "version" $s.version) }}
image: {{ include "switchboard.image" (dict "ctx" .ctx "image" (default dict $s.image)) | quote }}
replicas: {{ ternary $s.replicas 1 (hasKey $s "replicas") | int }}
capacity: {{ ternary $s.capacity $w.capacity (hasKey $s "capacity") | int }}
handler: {{ default $w.handler $s.handler | quote }}
drainDeadlineSeconds: {{ $drain }}
drainAtDeadline: {{ default $w.drainAtDeadline $s.drainAtDeadline | quote }}
terminationGracePeriodSeconds: {{ $grace }}
resources: {{ default $w.resources $s.resources | toJson }}
nodeSelector: {{ default $w.nodeSelector $s.nodeSelector | toJson }}
tolerations: {{ default $w.tolerations $s.tolerations | toJson }}
affinity: {{ default $w.affinity $s.affinity | toJson }}
podAnnotations: {{ merge (deepCopy (default dict $s.podAnnotations)) $w.podAnnotations | toJson }}
podLabels: {{ merge (deepCopy (default dict $s.podLabels)) $w.podLabels | toJson }}
extraEnv: {{ concat $w.extraEnv (default list $s.extraEnv) | toJson }}
autoscaling: {{ $auto | toJson }}
{{- end -}}

{{/* Checks across the whole of the values that the schema cannot express. */}}
{{- define "switchboard.validate" -}}
{{- $names := dict -}}
{{- range .Values.workers.versions -}}
{{- $name := include "switchboard.workerName" (dict "ctx" $ "version" .version) -}}
{{- if hasKey $names $name -}}
{{- fail (printf "workers.versions: %q and %q make the same Deployment name %s; each version must appear once" (get $names $name) .version $name) -}}
{{- end -}}
{{- $_ := set $names $name .version -}}
{{- end -}}
{{- if eq .Values.workers.topology.source "static" -}}
{{- if not (and .Values.workers.topology.region .Values.workers.topology.zone) -}}
{{- fail "workers.topology.source static needs workers.topology.region and workers.topology.zone" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.nats.tls.certKey (not .Values.nats.tls.keyKey) -}}
{{- fail "nats.tls.certKey needs nats.tls.keyKey (the client certificate's key)" -}}
{{- end -}}
{{- if and .Values.router.autoscaling.enabled (gt (int .Values.router.autoscaling.minReplicas) (int .Values.router.autoscaling.maxReplicas)) -}}
{{- fail "router.autoscaling: minReplicas is above maxReplicas" -}}
{{- end -}}
{{- if and .Values.recordings.enabled (not .Values.recordings.existingClaim) -}}
{{- fail "recordings.existingClaim is required when recordings.enabled: a ReadWriteMany PersistentVolumeClaim the gateways write recordings to and the routers serve them from" -}}
{{- end -}}
{{- $g := .Values.gateway -}}
{{- if $g.enabled -}}
{{- if and (or (gt (int $g.replicas) 1) $g.autoscaling.enabled) (not $g.tokenSecret.existingSecret) -}}
{{- fail "gateway.tokenSecret.existingSecret is required when gateway.replicas is above 1 or gateway.autoscaling.enabled: every gateway must sign and check stream and call tokens with the same secret (a stream token one replica writes into its TwiML is used on another)" -}}
{{- end -}}
{{- if $g.autoscaling.enabled -}}
{{- if gt (int $g.autoscaling.minReplicas) (int $g.autoscaling.maxReplicas) -}}
{{- fail "gateway.autoscaling: minReplicas is above maxReplicas" -}}
{{- end -}}
{{- if gt (int $g.autoscaling.targetLegsPerPod) (int $g.maxLegs) -}}
{{- fail (printf "gateway.autoscaling.targetLegsPerPod (%d) is above gateway.maxLegs (%d): gateways would refuse legs before the HPA adds any" (int $g.autoscaling.targetLegsPerPod) (int $g.maxLegs)) -}}
{{- end -}}
{{- end -}}
{{- if and $g.zone (not $g.region) -}}
{{- fail "gateway.zone needs gateway.region" -}}
{{- end -}}
{{- if and $g.ingress.enabled (not (include "switchboard.gatewayHost" .)) -}}
{{- fail "gateway.ingress needs a host: set gateway.ingress.host or gateway.publicURL" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when a component talks to Redis: routers and workers always, gateways with gateway.timeline "redis". (dict "ctx" $ "component" "gateway") */}}
{{- define "switchboard.usesRedis" -}}
{{- if or (ne .component "gateway") (eq .ctx.Values.gateway.timeline "redis") -}}true{{- end -}}
{{- end -}}

{{/* A NetworkPolicy's egress rules for a component (gateways: NATS and DNS, and Redis with gateway.timeline "redis"). (dict "ctx" $ "component" "router") */}}
{{- define "switchboard.egressRules" -}}
{{- $np := .ctx.Values.networkPolicy -}}
{{- $kinds := ternary (list "nats" "redis" "dns") (list "nats" "dns") (eq (include "switchboard.usesRedis" .) "true") -}}
{{- if and (eq .component "worker") (eq .ctx.Values.workers.topology.source "initContainer") -}}
{{- $kinds = append $kinds "kubeAPI" -}}
{{- end -}}
{{- range $kind := $kinds }}
{{- $rule := get $np.egress $kind }}
- ports:
    {{- range $rule.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- if eq $kind "dns" }}
    - port: {{ . }}
      protocol: UDP
    {{- end }}
    {{- end }}
  {{- with $rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- with $np.egress.extra }}
{{ toYaml . }}
{{- end }}
{{- end }}
