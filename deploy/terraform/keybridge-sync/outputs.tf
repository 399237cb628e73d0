output "schedule_expression" {
  description = "The EventBridge schedule, equal to `keybridge-sync schedule APP --interval N`."
  value       = local.schedule_expression
}

output "schedule_offset" {
  description = "Minute offset within the interval (first 32 bits of SHA-256(app) mod interval)."
  value       = local.schedule_offset
}

output "function_name" {
  value = aws_lambda_function.sync.function_name
}

output "function_arn" {
  value = aws_lambda_function.sync.arn
}

output "role_arn" {
  description = "The syncer's role (the policy is `keybridge-sync iam-policy`'s syncer_role)."
  value       = aws_iam_role.sync.arn
}

output "log_group_name" {
  value = aws_cloudwatch_log_group.sync.name
}

output "alarm_arn" {
  value = aws_cloudwatch_metric_alarm.failed_runs.arn
}

output "syncer_policy_json" {
  description = "The syncer role's Secrets Manager policy (`keybridge-sync iam-policy` syncer_role)."
  value       = jsonencode(local.syncer_policy)
}

output "function_policy_json" {
  description = "What the application's own functions need to read the synced secrets (`keybridge-sync iam-policy` function_role): attach it to their roles."
  value       = jsonencode(local.function_policy)
}
