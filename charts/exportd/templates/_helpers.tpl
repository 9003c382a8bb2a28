{{/*
Names, labels, images and the pieces every pod shares. Pod and container security contexts are
fixed here, not taken from values: every exportd pod runs restricted, without exception.
*/}}

{{- define "exportd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "exportd.fullname" -}}
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

{{/* A component's object name: <fullname>-<component>, within 63 characters. */}}
{{- define "exportd.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "exportd.fullname" $root | trunc (int (sub 62 (len (index . 1))))) (index . 1) | trimSuffix "-" -}}
{{- end -}}

{{- define "exportd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "exportd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: exportd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: [root, component]. */}}
{{- define "exportd.componentLabels" -}}
{{ include "exportd.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Selector of one component's pods: [root, component]. Never changes after install. */}}
{{- define "exportd.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "exportd.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/*
Image reference: [root, image values]. The digest wins over the tag; the tag falls back to
global.imageTag, then to the chart's appVersion, so one value moves every image.
*/}}
{{- define "exportd.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $registry := $image.registry | default $root.Values.global.imageRegistry -}}
{{- $repository := $image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository ($image.tag | default $root.Values.global.imageTag | default $root.Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{- define "exportd.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The restricted Pod Security Standard, pod level. */}}
{{- define "exportd.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security Standard, container level, with a read-only root. */}}
{{- define "exportd.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "exportd.catalogConfigMap" -}}
{{- .Values.catalog.existingConfigMap | default (include "exportd.componentName" (list . "catalog")) -}}
{{- end -}}

{{- define "exportd.hasCatalog" -}}
{{- if or .Values.catalog.existingConfigMap .Values.catalog.content }}true{{ end -}}
{{- end -}}

{{- define "exportd.dataClaim" -}}
{{- if .Values.storage.persistence.enabled -}}
{{- .Values.storage.persistence.existingClaim | default (include "exportd.componentName" (list . "files")) -}}
{{- end -}}
{{- end -}}

{{- define "exportd.publicUrl" -}}
{{- if .Values.delivery.publicUrl -}}
{{- .Values.delivery.publicUrl -}}
{{- else if and .Values.api.ingress.enabled .Values.api.ingress.hosts -}}
{{- printf "https://%s" (first .Values.api.ingress.hosts) -}}
{{- else -}}
{{- $scheme := ternary "https" "http" (include "exportd.apiTls" . | eq "true") -}}
{{- $port := int .Values.api.service.port -}}
{{- $host := printf "%s.%s.svc" (include "exportd.componentName" (list . "api")) .Release.Namespace -}}
{{- if or (and (eq $scheme "http") (eq $port 80)) (and (eq $scheme "https") (eq $port 443)) -}}
{{- printf "%s://%s" $scheme $host -}}
{{- else -}}
{{- printf "%s://%s:%d" $scheme $host $port -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the API serves HTTPS itself (api.tls.existingSecret). */}}
{{- define "exportd.apiTls" -}}
{{- if .Values.api.tls.existingSecret }}true{{ end -}}
{{- end -}}

{{/* Scheme of the API's own port, for probes. */}}
{{- define "exportd.apiScheme" -}}
{{- ternary "HTTPS" "HTTP" (include "exportd.apiTls" . | eq "true") -}}
{{- end -}}

{{/*
Secret files one component reads: [root, list of secret names]. Each configured reference is a
projected item under /run/secrets/exportd/<file>; exportd reads it through EXPORTD_<X>_FILE.
The table maps a name to (values reference, file name, setting variable).
*/}}
{{- define "exportd.secretTable" -}}
{{- $v := .Values -}}
signingKey: {ref: {{ toJson $v.secrets.signingKey }}, file: signing-key, env: EXPORTD_SIGNING_KEY_FILE}
jwtSecret: {ref: {{ toJson $v.secrets.jwtSecret }}, file: jwt-secret, env: EXPORTD_JWT_SECRET_FILE}
stateDbUrl: {ref: {{ toJson $v.secrets.stateDbUrl }}, file: state-db-url, env: EXPORTD_STATE_DB_URL_FILE}
smtpPassword: {ref: {{ toJson $v.delivery.smtp.password }}, file: smtp-password, env: EXPORTD_SMTP__PASSWORD_FILE}
redisUrl: {ref: {existingSecret: {{ $v.redis.existingSecret | quote }}, key: {{ $v.redis.key | quote }}}, file: redis-url, env: EXPORTD_REDIS_URL_FILE}
apiTlsCert: {ref: {existingSecret: {{ $v.api.tls.existingSecret | quote }}, key: {{ $v.api.tls.certKey | quote }}}, file: tls.crt, env: EXPORTD_TLS_CERT_FILE}
apiTlsKey: {ref: {existingSecret: {{ $v.api.tls.existingSecret | quote }}, key: {{ $v.api.tls.keyKey | quote }}}, file: tls.key, env: EXPORTD_TLS_KEY_FILE}
{{- if eq $v.storage.kind "s3" }}
storageSecretKey: {ref: {existingSecret: {{ $v.storage.s3Credentials.existingSecret | quote }}, key: {{ $v.storage.s3Credentials.secretAccessKeyKey | quote }}}, file: storage-secret-access-key, env: EXPORTD_STORAGE__SECRET_ACCESS_KEY_FILE}
{{- end }}
{{- if eq $v.storage.kind "gcs" }}
{{- /* Application Default Credentials: the SDK reads this file itself. */}}
storageGcs: {ref: {{ toJson $v.storage.gcsCredentials }}, file: gcs-credentials.json, env: GOOGLE_APPLICATION_CREDENTIALS}
{{- end }}
{{- range $name, $source := $v.sources }}
{{- if $source.password }}
source-{{ $name }}: {ref: {{ toJson $source.password }}, file: {{ printf "source-%s-password" $name }}, env: {{ printf "EXPORTD_SOURCES__%s__PASSWORD_FILE" (upper $name) }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* Names in [root, names] whose Secret is configured, as a JSON list. */}}
{{- define "exportd.configuredSecrets" -}}
{{- $root := index . 0 -}}
{{- $table := include "exportd.secretTable" $root | fromYaml -}}
{{- $names := list -}}
{{- range $name := index . 1 -}}
{{- $entry := get $table $name -}}
{{- if and $entry $entry.ref.existingSecret -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* env entries pointing exportd at its secret files: [root, names]. */}}
{{- define "exportd.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $table := include "exportd.secretTable" $root | fromYaml -}}
{{- range $name := include "exportd.configuredSecrets" . | fromJsonArray }}
{{- $entry := get $table $name }}
- name: {{ $entry.env }}
  value: {{ printf "/run/secrets/exportd/%s" $entry.file | quote }}
{{- end }}
{{- end -}}

{{/* The projected volume of secret files: [root, names]; nothing when none is configured. */}}
{{- define "exportd.secretVolume" -}}
{{- $root := index . 0 -}}
{{- $table := include "exportd.secretTable" $root | fromYaml -}}
{{- $names := include "exportd.configuredSecrets" . | fromJsonArray -}}
{{- if $names }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
{{- range $name := $names }}
{{- $entry := get $table $name }}
      - secret:
          name: {{ $entry.ref.existingSecret }}
          items:
            - key: {{ $entry.ref.key }}
              path: {{ $entry.file }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "exportd.secretMount" -}}
{{- if include "exportd.configuredSecrets" . | fromJsonArray }}
- name: secrets
  mountPath: /run/secrets/exportd
  readOnly: true
{{- end }}
{{- end -}}

{{/* Settings every exportd process shares (catalog, sources, storage, links, logs). */}}
{{- define "exportd.commonEnv" -}}
- name: EXPORTD_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: EXPORTD_PUBLIC_URL
  value: {{ include "exportd.publicUrl" . | quote }}
- name: EXPORTD_LINK_EXPIRY_SECONDS
  value: {{ .Values.delivery.linkExpirySeconds | int64 | quote }}
{{- if include "exportd.hasCatalog" . }}
- name: EXPORTD_CATALOG_PATH
  value: /etc/exportd/catalog/catalog.yaml
{{- end }}
{{- range $name, $source := .Values.sources }}
- name: {{ printf "EXPORTD_SOURCES__%s__KIND" (upper $name) }}
  value: {{ $source.kind | quote }}
- name: {{ printf "EXPORTD_SOURCES__%s__DSN" (upper $name) }}
  value: {{ $source.dsn | quote }}
{{- end }}
- name: EXPORTD_STORAGE__KIND
  value: {{ .Values.storage.kind | quote }}
{{- with .Values.storage.bucket }}
- name: EXPORTD_STORAGE__BUCKET
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.prefix }}
- name: EXPORTD_STORAGE__PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.endpointUrl }}
- name: EXPORTD_STORAGE__ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.region }}
- name: EXPORTD_STORAGE__REGION
  value: {{ . | quote }}
{{- end }}
{{- if eq .Values.storage.kind "s3" }}
- name: EXPORTD_STORAGE__ADDRESSING_STYLE
  value: {{ .Values.storage.addressingStyle | quote }}
{{- end }}
{{- if and (eq .Values.storage.kind "gcs") .Values.storage.project }}
- name: EXPORTD_STORAGE__PROJECT
  value: {{ .Values.storage.project | quote }}
{{- end }}
{{- end -}}

{{/* The S3 access key id, from the Secret that holds the secret key (never in a ConfigMap). */}}
{{- define "exportd.s3KeyIdEnv" -}}
{{- with .Values.storage.s3Credentials }}
{{- if and (eq $.Values.storage.kind "s3") .existingSecret }}
- name: EXPORTD_STORAGE__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Mail settings (the API and the export pods send e-mail). */}}
{{- define "exportd.smtpEnv" -}}
{{- with .Values.delivery.smtp }}
{{- if .host }}
- name: EXPORTD_SMTP__HOST
  value: {{ .host | quote }}
- name: EXPORTD_SMTP__PORT
  value: {{ .port | int64 | quote }}
- name: EXPORTD_SMTP__MODE
  value: {{ .mode | quote }}
{{- with .username }}
- name: EXPORTD_SMTP__USERNAME
  value: {{ . | quote }}
{{- end }}
{{- with .sender }}
- name: EXPORTD_SMTP__SENDER
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Who may receive e-mailed exports (the API enforces it); the default needs an allow-list. */}}
{{- define "exportd.recipientEnv" -}}
{{- with .Values.delivery.recipients }}
{{- if and $.Values.delivery.smtp.host (eq .policy "domains") (empty .allowedDomains) }}
{{- fail "delivery.recipients.allowedDomains is required with delivery.smtp.host: list the domains exports may be e-mailed to (or set delivery.recipients.policy to token or any)" }}
{{- end }}
- name: EXPORTD_EMAIL_RECIPIENTS
  value: {{ .policy | quote }}
- name: EXPORTD_EMAIL_ALLOWED_DOMAINS
  value: {{ toJson .allowedDomains | quote }}
- name: EXPORTD_EMAIL_DAILY_CAP_PER_USER
  value: {{ .dailyCapPerUser | int64 | quote }}
{{- end }}
{{- end -}}

{{/* The catalog volume and mount, when a catalog is configured. */}}
{{- define "exportd.catalogVolume" -}}
{{- if include "exportd.hasCatalog" . }}
- name: catalog
  configMap:
    name: {{ include "exportd.catalogConfigMap" . }}
    items:
      - key: catalog.yaml
        path: catalog.yaml
{{- end }}
{{- end -}}

{{- define "exportd.catalogMount" -}}
{{- if include "exportd.hasCatalog" . }}
- name: catalog
  mountPath: /etc/exportd/catalog
  readOnly: true
{{- end }}
{{- end -}}
