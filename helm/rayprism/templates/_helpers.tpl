{{/*
Names. The full name also names the RayService, to which KubeRay appends suffixes for its
RayCluster and pods: kept to 40 characters so that theirs stay within Kubernetes' 63.
*/}}
{{- define "rayprism.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "rayprism.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rayprism.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rayprism.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rayprism.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rayprism.labels" -}}
helm.sh/chart: {{ include "rayprism.chart" . }}
{{ include "rayprism.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "rayprism.image" -}}
{{- $image := .image | default dict -}}
{{- $repository := $image.repository | default .root.Values.image.repository -}}
{{- $tag := $image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/*
The Milvus server the service uses: milvus.externalUri, else the bundled chart's Service (named as
the Milvus chart names it), else nothing (the serve config's own store.uri stands).
*/}}
{{- define "rayprism.milvusUri" -}}
{{- $milvus := .Values.milvus -}}
{{- if and $milvus.enabled $milvus.externalUri -}}
{{- fail "milvus: set milvus.enabled (the bundled Milvus chart) or milvus.externalUri (a Milvus you run), not both" -}}
{{- else if $milvus.externalUri -}}
{{- $milvus.externalUri -}}
{{- else if $milvus.enabled -}}
{{- $name := default "milvus" $milvus.nameOverride -}}
{{- $fullname := "" -}}
{{- if $milvus.fullnameOverride -}}
{{- $fullname = $milvus.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains $name .Release.Name -}}
{{- $fullname = .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $fullname = printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- printf "http://%s:%v" $fullname (dig "service" "port" 19530 $milvus) -}}
{{- end -}}
{{- end -}}

{{/* A Milvus Lite path made absolute against appDir; server URIs unchanged. */}}
{{- define "rayprism.storeUri" -}}
{{- $uri := .uri -}}
{{- if or (regexMatch "^[a-z][a-z0-9+.-]*://" $uri) (hasPrefix "/" $uri) -}}
{{- $uri -}}
{{- else -}}
{{- printf "%s/%s" (trimSuffix "/" .appDir) (trimPrefix "./" $uri) -}}
{{- end -}}
{{- end -}}

{{/*
The serve config handed to the application (YAML): serveYaml's text or .Values.serve, with
server.host 0.0.0.0, server.port service.port, the Milvus URI as store.uri, relative Lite paths
made absolute and seed dropped.
*/}}
{{- define "rayprism.serveConfig" -}}
{{- $serve := dict -}}
{{- if .Values.serveYaml -}}
{{- $serve = fromYaml .Values.serveYaml -}}
{{- if hasKey $serve "Error" -}}
{{- fail (printf "serveYaml is not a YAML mapping: %s" (get $serve "Error")) -}}
{{- end -}}
{{- else -}}
{{- $serve = deepCopy (.Values.serve | default dict) -}}
{{- end -}}
{{- $server := deepCopy ($serve.server | default dict) -}}
{{- $_ := set $server "host" "0.0.0.0" -}}
{{- $_ := set $server "port" (int .Values.service.port) -}}
{{- $_ := set $serve "server" $server -}}
{{- $store := deepCopy ($serve.store | default dict) -}}
{{- $milvusUri := include "rayprism.milvusUri" . -}}
{{- if $milvusUri -}}
{{- $_ := set $store "uri" $milvusUri -}}
{{- end -}}
{{- if $store.uri -}}
{{- $_ := set $store "uri" (include "rayprism.storeUri" (dict "uri" $store.uri "appDir" .Values.appDir)) -}}
{{- end -}}
{{- $_ := set $serve "store" $store -}}
{{- $collections := list -}}
{{- range ($serve.collections | default list) -}}
{{- $collection := deepCopy . -}}
{{- if $collection.uri -}}
{{- $_ := set $collection "uri" (include "rayprism.storeUri" (dict "uri" $collection.uri "appDir" $.Values.appDir)) -}}
{{- end -}}
{{- $collections = append $collections $collection -}}
{{- end -}}
{{- if hasKey $serve "collections" -}}
{{- $_ := set $serve "collections" $collections -}}
{{- end -}}
{{- $_ := unset $serve "seed" -}}
{{- toYaml $serve -}}
{{- end -}}

{{/* Ray Serve's config (serveConfigV2): one application built by rayprism's app_builder. */}}
{{- define "rayprism.serveConfigV2" -}}
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: {{ int .Values.service.port }}
applications:
  - name: rayprism
    route_prefix: /
    import_path: rayprism.application:app_builder
    args:
      config:
        {{- include "rayprism.serveConfig" . | nindent 8 }}
{{- end -}}

{{/* The Secret holding the API keys, or nothing. */}}
{{- define "rayprism.apiKeysSecret" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{- .Values.apiKeys.existingSecret -}}
{{- else if .Values.apiKeys.keys -}}
{{- printf "%s-api-keys" (include "rayprism.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Environment of every Ray container. Arguments: root, serving. */}}
{{- define "rayprism.env" -}}
{{- $serving := .serving -}}
{{- with .root -}}
{{- $secret := include "rayprism.apiKeysSecret" . -}}
{{- if $secret }}
- name: RAYPRISM_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.apiKeys.keysKey }}
- name: RAYPRISM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.apiKeys.clientKeyKey }}
      optional: true
{{- end }}
{{- $existingSecret := .Values.apiKeys.existingSecret }}
{{- range $variable, $key := .Values.apiKeys.env }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $existingSecret }}
      key: {{ $key }}
{{- end }}
{{- if and $serving (eq .Values.serveIngress.mode "haproxy") }}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
{{- end }}
{{- if and .Values.rayAuth.enabled (eq .Values.rayAuth.mode "env") }}
{{- if not .Values.rayAuth.existingSecret }}
{{- fail "rayAuth.mode env needs rayAuth.existingSecret: a Secret with the key auth_token" }}
{{- end }}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.rayAuth.existingSecret }}
      key: auth_token
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
A RayClusterSpec. Arguments: root (the chart's context), cluster (service, embed or train: a pod
label), serving (true for the RayService: serve port, ingress settings and /health probes), groups
(worker groups by name), jobFiles ({configMap, job} whose files are mounted under appDir/configs, or "").
*/}}
{{- define "rayprism.rayClusterSpec" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
rayVersion: {{ $values.rayVersion | quote }}
enableInTreeAutoscaling: {{ $values.autoscaler.enabled }}
{{- if $values.autoscaler.enabled }}
autoscalerOptions:
  idleTimeoutSeconds: {{ int $values.autoscaler.idleTimeoutSeconds }}
  upscalingMode: {{ $values.autoscaler.upscalingMode }}
  {{- with $values.autoscaler.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if $values.rayAuth.enabled }}
{{- if eq $values.rayAuth.mode "operator" }}
authOptions:
  mode: token
  {{- with $values.rayAuth.existingSecret }}
  secretName: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
headGroupSpec:
  serviceType: {{ $values.head.serviceType }}
  rayStartParams:
    dashboard-host: "0.0.0.0"
    {{- range $key, $value := $values.head.rayStartParams }}
    {{ $key }}: {{ $value | toString | quote }}
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "rayprism.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: ray-head
        rayprism/cluster: {{ .cluster }}
        {{- with $values.head.labels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $values.head.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "rayprism.podSpecCommon" (dict "root" $root "group" $values.head) | nindent 6 }}
      containers:
        - name: ray-head
          image: {{ include "rayprism.image" (dict "root" $root "image" dict) }}
          imagePullPolicy: {{ $values.image.pullPolicy }}
          ports:
            - {name: gcs-server, containerPort: 6379}
            - {name: dashboard, containerPort: 8265}
            - {name: client, containerPort: 10001}
            - {name: metrics, containerPort: 8080}
            {{- if .serving }}
            - {name: serve, containerPort: {{ int $values.service.port }}}
            {{- end }}
          {{- with concat (fromYamlArray (include "rayprism.env" (dict "root" $root "serving" .serving))) ($values.head.env | default list) }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $values.head.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- include "rayprism.volumeMounts" (dict "root" $root "jobFiles" .jobFiles) | nindent 10 }}
      {{- include "rayprism.volumes" (dict "root" $root "jobFiles" .jobFiles) | nindent 6 }}
workerGroupSpecs:
  {{- range $name, $group := .groups }}
  {{- if $group.enabled }}
  {{- if gt (int $group.minReplicas) (int $group.maxReplicas) }}
  {{- fail (printf "workerGroups.%s: minReplicas (%v) must be ≤ maxReplicas (%v)" $name $group.minReplicas $group.maxReplicas) }}
  {{- end }}
  - groupName: {{ $name }}
    minReplicas: {{ int $group.minReplicas }}
    maxReplicas: {{ int $group.maxReplicas }}
    replicas: {{ int (default $group.minReplicas $group.replicas) }}
    {{- if $group.rayStartParams }}
    rayStartParams:
      {{- range $key, $value := $group.rayStartParams }}
      {{ $key }}: {{ $value | toString | quote }}
      {{- end }}
    {{- else }}
    rayStartParams: {}
    {{- end }}
    template:
      metadata:
        labels:
          {{- include "rayprism.selectorLabels" $root | nindent 10 }}
          app.kubernetes.io/component: ray-worker
          rayprism/cluster: {{ $.cluster }}
          rayprism/worker-group: {{ $name }}
          {{- with $group.labels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with $group.annotations }}
        annotations:
          {{- toYaml . | nindent 10 }}
        {{- end }}
      spec:
        {{- include "rayprism.podSpecCommon" (dict "root" $root "group" $group) | nindent 8 }}
        containers:
          - name: ray-worker
            image: {{ include "rayprism.image" (dict "root" $root "image" $group.image) }}
            imagePullPolicy: {{ $values.image.pullPolicy }}
            ports:
              - {name: metrics, containerPort: 8080}
              {{- if $.serving }}
              - {name: serve, containerPort: {{ int $values.service.port }}}
              {{- end }}
            {{- with concat (fromYamlArray (include "rayprism.env" (dict "root" $root "serving" $.serving))) ($group.env | default list) }}
            env:
              {{- toYaml . | nindent 14 }}
            {{- end }}
            resources:
              {{- $resources := deepCopy ($group.resources | default dict) }}
              {{- if gt (int ($group.gpus | default 0)) 0 }}
              {{- $limits := $resources.limits | default dict }}
              {{- $_ := set $limits "nvidia.com/gpu" (int $group.gpus) }}
              {{- $_ := set $resources "limits" $limits }}
              {{- end }}
              {{- toYaml $resources | nindent 14 }}
            {{- if and $.serving $values.probes.readiness.enabled }}
            readinessProbe:
              httpGet:
                path: {{ $values.probes.readiness.path }}
                port: serve
              periodSeconds: {{ int $values.probes.readiness.periodSeconds }}
              timeoutSeconds: {{ int $values.probes.readiness.timeoutSeconds }}
              failureThreshold: {{ int $values.probes.readiness.failureThreshold }}
            {{- end }}
            {{- if and $.serving $values.probes.startup.enabled }}
            startupProbe:
              httpGet:
                path: {{ $values.probes.startup.path }}
                port: serve
              periodSeconds: {{ int $values.probes.startup.periodSeconds }}
              timeoutSeconds: {{ int $values.probes.startup.timeoutSeconds }}
              failureThreshold: {{ int $values.probes.startup.failureThreshold }}
            {{- end }}
            {{- include "rayprism.volumeMounts" (dict "root" $root "jobFiles" $.jobFiles) | nindent 12 }}
        {{- include "rayprism.volumes" (dict "root" $root "jobFiles" $.jobFiles) | nindent 8 }}
  {{- end }}
  {{- end }}
{{- end -}}

{{/* Pod-level settings shared by head and worker pods. Arguments: root, group. */}}
{{- define "rayprism.podSpecCommon" -}}
{{- $values := .root.Values -}}
{{- with $values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with $values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "rayprism.volumeMounts" -}}
{{- $values := .root.Values -}}
{{- if or .jobFiles $values.extraVolumeMounts }}
volumeMounts:
  {{- if .jobFiles }}
  - name: job-files
    mountPath: {{ printf "%s/configs/chart-serve.yaml" (trimSuffix "/" $values.appDir) }}
    subPath: serve.yaml
    readOnly: true
  - name: job-files
    mountPath: {{ printf "%s/configs/chart-%s-job.yaml" (trimSuffix "/" $values.appDir) .jobFiles.job }}
    subPath: job.yaml
    readOnly: true
  {{- end }}
  {{- with $values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "rayprism.volumes" -}}
{{- $values := .root.Values -}}
{{- if or .jobFiles $values.extraVolumes }}
volumes:
  {{- if .jobFiles }}
  - name: job-files
    configMap:
      name: {{ .jobFiles.configMap }}
  {{- end }}
  {{- with $values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}
