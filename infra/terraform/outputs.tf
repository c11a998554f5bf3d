output "stream_url" {
  description = "HEARTLINE_STREAM for the services."
  value       = "kinesis://${var.prefix}?region=${var.region}&create=false"
}

output "kv_url" {
  description = "HEARTLINE_KV for the services."
  value       = "dynamodb://${aws_dynamodb_table.state.name}?region=${var.region}&create=false"
}

output "services_policy_arn" {
  description = "Attach to the IAM roles the services run as."
  value       = aws_iam_policy.services.arn
}
