{{- define "labels.common" -}}
app.kubernetes.io/part-of: shop
shop/tier: {{ .Values.labels.tier }}
{{- end -}}
