{{/*
Chart name, shortened to the 63 characters a label value may hold.
*/}}
{{- define "telemetry-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: the release name, followed by the chart name unless the release
name already contains it.
*/}}
{{- define "telemetry-operator.fullname" -}}
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

{{/*
Value of the helm.sh/chart label.
*/}}
{{- define "telemetry-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator pods. They never change between upgrades, because a
Deployment's selector is immutable.
*/}}
{{- define "telemetry-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "telemetry-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object the chart renders. Pass a dict with the root context as "root" and the
app.kubernetes.io/component value as "component".
*/}}
{{- define "telemetry-operator.labels" -}}
{{- $root := .root -}}
helm.sh/chart: {{ include "telemetry-operator.chart" $root }}
{{ include "telemetry-operator.selectorLabels" $root }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: telemetry-pipeline
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "telemetry-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "telemetry-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: <registry>/<repository>:<tag>, or @<digest> when a digest is set.
*/}}
{{- define "telemetry-operator.image" -}}
{{- $image := printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $image .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $image (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
"true" when leader election is on: always with more than one replica, else when asked for.
*/}}
{{- define "telemetry-operator.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}true{{ else }}false{{ end }}
{{- end }}

{{/*
Name of the leader-election Lease.
*/}}
{{- define "telemetry-operator.leaseName" -}}
{{- default (include "telemetry-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}
