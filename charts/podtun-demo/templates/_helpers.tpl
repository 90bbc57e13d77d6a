{{/* Namespace of every object. */}}
{{- define "podtun-demo.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* Labels Helm users expect; selectors use only `app`, as manifests/ do. */}}
{{- define "podtun-demo.labels" -}}
app.kubernetes.io/part-of: podtun-demo
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* image: repository:tag */}}
{{- define "podtun-demo.image" -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}

{{/*
The redis container, shared by pod/redis and deploy/redis-cache.
Persistence is off: the data is throwaway.
*/}}
{{- define "podtun-demo.redisContainer" -}}
- name: redis
  image: {{ include "podtun-demo.image" .Values.redis.image | quote }}
  command: ["redis-server", "--port", {{ .Values.redis.port | toString | quote }}, "--save", "", "--appendonly", "no", "--protected-mode", "no"]
  ports:
    - name: redis
      containerPort: {{ .Values.redis.port }}
  readinessProbe:
    tcpSocket:
      port: redis
    periodSeconds: 2
  resources:
    {{- toYaml .Values.redis.resources | nindent 4 }}
{{- end -}}
