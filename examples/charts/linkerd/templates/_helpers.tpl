{{- define "linkerd.labels" -}}
app.kubernetes.io/name: linkerd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
linkerd.io/control-plane-ns: {{ .Release.Namespace }}
{{- end -}}
