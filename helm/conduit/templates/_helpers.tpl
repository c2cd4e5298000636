{{- define "conduit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conduit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "conduit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conduit.labels" -}}
helm.sh/chart: {{ include "conduit.chart" . }}
{{ include "conduit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "conduit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conduit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "conduit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conduit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conduit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "conduit.secretName" -}}
{{- default (include "conduit.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* Settings every conduit container gets: the prod profile, credentials as files. */}}
{{- define "conduit.env" -}}
- name: APP_ENV
  value: prod
- name: CONDUIT__AUTH__JWT_SECRET_FILE
  value: /run/secrets/conduit/jwt-secret
- name: CONDUIT__DATABASE__URL_FILE
  value: /run/secrets/conduit/database-url
{{- if .Values.secret.previousJwtSecretUntil }}
- name: CONDUIT__AUTH__PREVIOUS_JWT_SECRET_FILE
  value: /run/secrets/conduit/previous-jwt-secret
- name: CONDUIT__AUTH__PREVIOUS_JWT_SECRET_UNTIL
  value: {{ .Values.secret.previousJwtSecretUntil | quote }}
{{- end }}
{{- end }}

{{/* The chart-made Secret's data (also what its checksum annotation is taken of). */}}
{{- define "conduit.secretData" -}}
jwt-secret: {{ .Values.secret.jwtSecret | quote }}
database-url: {{ default (printf "postgres://conduit@postgres.%s.svc:5432/conduit" .Release.Namespace) .Values.secret.databaseUrl | quote }}
{{- if .Values.secret.previousJwtSecret }}
previous-jwt-secret: {{ .Values.secret.previousJwtSecret | quote }}
{{- end }}
{{- end }}

{{/* The CONDUIT__* settings of the serving pods and of the migration Job alike. */}}
{{- define "conduit.configData" -}}
CONDUIT__SERVER__ADDR: "0.0.0.0:8080"
CONDUIT__SERVER__ADMIN_ADDR: "0.0.0.0:9090"
CONDUIT__SERVER__DRAIN_DELAY: "{{ .Values.conduit.drainDelaySeconds }}s"
CONDUIT__SERVER__SHUTDOWN_TIMEOUT: "{{ .Values.conduit.shutdownTimeoutSeconds }}s"
CONDUIT__DATABASE__MIGRATE_ON_START: "false"
CONDUIT__AUTH__MAX_CONCURRENT_HASHES: "{{ .Values.conduit.maxConcurrentHashes }}"
{{- with .Values.conduit.trustedProxies }}
CONDUIT__SERVER__TRUSTED_PROXIES: {{ join "," . | quote }}
{{- end }}
{{- range $key, $value := .Values.conduit.config }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{- define "conduit.secretVolume" -}}
- name: credentials
  secret:
    secretName: {{ include "conduit.secretName" . }}
    defaultMode: 0440
{{- end }}

{{- define "conduit.podSecurity" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
