output "role_arn" {
  description = "For keybridge-ca's [aws] role_arn (or its template arn:aws:iam::{account}:role/<role_name>)."
  value       = aws_iam_role.svid_store.arn
}

output "policy_json" {
  value = jsonencode(local.policy)
}
