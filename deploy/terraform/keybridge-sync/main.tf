# keybridge-sync as a scheduled Lambda function (one per application and account).
# docs: README.md "Deploy to AWS", docs/keybridge-sync.md.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  # Schedule: offset = first 32 bits (big-endian) of SHA-256(app) mod interval, the formula
  # `keybridge-sync schedule APP` uses (src/sync/schedule.c); 8 hex digits are those 32 bits.
  schedule_offset     = parseint(substr(sha256(var.app), 0, 8), 16) % var.interval
  schedule_expression = var.interval == 60 ? "cron(${local.schedule_offset} * * * ? *)" : "cron(${local.schedule_offset}/${var.interval} * * * ? *)"

  sanitized_app = replace(var.app, "/[^A-Za-z0-9_-]/", "-")
  name = coalesce(var.function_name,
    local.sanitized_app == var.app && length(var.app) <= 41
    ? "keybridge-sync-${var.app}"
  : "keybridge-sync-${substr(local.sanitized_app, 0, 32)}-${substr(sha256(var.app), 0, 8)}")

  account = data.aws_caller_identity.current.account_id
  region  = data.aws_region.current.name
  # The region the IAM policy names: the one region written, or any when several are.
  policy_region = length(distinct(var.regions)) > 1 ? "*" : (length(var.regions) == 1 ? var.regions[0] : local.region)

  # The policies `keybridge-sync iam-policy APP --account A --region R --svid-secret S` prints
  # (src/sync/main.c cmd_iam_policy); tests/integration/test_terraform.py compares them.
  app_secrets_arn = "arn:aws:secretsmanager:${local.policy_region}:${local.account}:secret:keybridge/${var.app}/*"
  # Secret ARNs end in -XXXXXX (6 random characters)
  svid_secret_arn = "arn:aws:secretsmanager:${local.policy_region}:${local.account}:secret:${var.svid_secret_name}-??????"
  syncer_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid    = "ManageOwnSecrets"
        Effect = "Allow"
        Action = [
          "secretsmanager:DescribeSecret",
          "secretsmanager:GetResourcePolicy",
          "secretsmanager:PutSecretValue",
          "secretsmanager:TagResource",
          "secretsmanager:DeleteSecret",
          "secretsmanager:RestoreSecret",
          "secretsmanager:UpdateSecret",
        ]
        Resource = local.app_secrets_arn
      },
      {
        Sid       = "CreateOwnSecrets"
        Effect    = "Allow"
        Action    = ["secretsmanager:CreateSecret", "secretsmanager:TagResource"]
        Resource  = local.app_secrets_arn
        Condition = { StringEquals = { "aws:RequestTag/keybridge:app" = var.app } }
      },
      {
        Sid      = "ListManaged"
        Effect   = "Allow"
        Action   = "secretsmanager:ListSecrets"
        Resource = "*"
      },
      {
        Sid      = "ReadOwnSvid"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = local.svid_secret_arn
      },
    ]
  }
  # For the application's own functions (what they need to read the synced secrets).
  function_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ReadAppSecrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        Resource = local.app_secrets_arn
      },
      {
        Sid      = "ReadOwnSvid"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = local.svid_secret_arn
      },
    ]
  }

  # Lambda's CodeSha256 and source_code_hash are base64; the .sha256 file is hex. Terraform has
  # no hex decoder: 3 bytes (6 hex digits) become 4 base64 characters; the last 2 bytes become
  # 3 characters and "=".
  b64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  sha_hex      = lower(var.artifact_sha256)
  artifact_sha256_base64 = join("", concat(
    [for i in range(10) : join("", [for d in [262144, 4096, 64, 1] :
    substr(local.b64_alphabet, floor(parseint(substr(local.sha_hex, i * 6, 6), 16) / d) % 64, 1)])],
    [join("", [for d in [262144, 4096, 64] :
    substr(local.b64_alphabet, floor(parseint(substr(local.sha_hex, 60, 4), 16) * 256 / d) % 64, 1)]), "="]
  ))

  environment = merge(
    {
      KEYBRIDGE_SYNC_SOURCE_URL            = var.keybridged_url
      KEYBRIDGE_SYNC_SOURCE_SERVER_ID      = var.server_id
      KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID = var.svid_secret_name
      KEYBRIDGE_SYNC_SINK_TARGET           = "secretsmanager"
      KEYBRIDGE_SYNC_SINK_DELETE_POLICY    = var.delete_policy
      KEYBRIDGE_SYNC_LOG_LEVEL             = var.log_level
    },
    length(var.regions) > 0 ? { KEYBRIDGE_SYNC_SINK_REGIONS = join(",", var.regions) } : {},
    var.sink_endpoint != null ? { KEYBRIDGE_SYNC_SINK_ENDPOINT = var.sink_endpoint } : {},
    var.max_delete_fraction != null ? { KEYBRIDGE_SYNC_SINK_MAX_DELETE_FRACTION = tostring(var.max_delete_fraction) } : {},
    var.write_rate != null ? { KEYBRIDGE_SYNC_SINK_RATE = tostring(var.write_rate) } : {},
  )
  timeout        = coalesce(var.timeout, min(300, var.interval * 60 - 10))
  log_group_name = "/aws/lambda/${local.name}"
  use_vpc        = length(var.vpc_subnet_ids) > 0
}

# ---- role -------------------------------------------------------------------------------------

resource "aws_iam_role" "sync" {
  name                 = local.name
  description          = "keybridge-sync for ${var.app}"
  permissions_boundary = var.permissions_boundary
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = local.account } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "secrets" {
  name   = "keybridge-sync"
  role   = aws_iam_role.sync.id
  policy = jsonencode(local.syncer_policy)
}

# Logs only into the function's own group (no logs:CreateLogGroup: the module creates it).
resource "aws_iam_role_policy" "logs" {
  name = "logs"
  role = aws_iam_role.sync.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "WriteOwnLogs"
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
      Resource = "${aws_cloudwatch_log_group.sync.arn}:*"
    }]
  })
}

# Network interfaces in the VPC (AWS's managed policy for exactly this).
resource "aws_iam_role_policy_attachment" "vpc" {
  count      = local.use_vpc ? 1 : 0
  role       = aws_iam_role.sync.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

# ---- function ---------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "sync" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "sync" {
  function_name = local.name
  description   = "keybridge-sync for ${var.app} (${local.schedule_expression})"
  role          = aws_iam_role.sync.arn
  runtime       = "provided.al2023"
  handler       = "bootstrap"
  architectures = [var.architecture]
  memory_size   = var.memory_size
  timeout       = local.timeout
  # One run at a time: a run still going when the next is due makes the next wait, never overlap.
  reserved_concurrent_executions = 1

  s3_bucket         = var.artifact_bucket
  s3_key            = var.artifact_key
  s3_object_version = var.artifact_object_version
  source_code_hash  = local.artifact_sha256_base64

  environment {
    variables = local.environment
  }

  dynamic "vpc_config" {
    for_each = local.use_vpc ? [1] : []
    content {
      subnet_ids         = var.vpc_subnet_ids
      security_group_ids = var.vpc_security_group_ids
    }
  }

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.sync, aws_iam_role_policy.logs, aws_iam_role_policy_attachment.vpc]

  lifecycle {
    postcondition {
      condition     = self.code_sha256 == local.artifact_sha256_base64
      error_message = "The deployed code's SHA-256 (${self.code_sha256}) is not artifact_sha256: the S3 object version holds another zip."
    }
  }
}

# Scheduled (asynchronous) invocations: no Lambda-side retries (the next run retries anyway), and
# a tick that waited a whole interval behind a long run is dropped rather than queued.
resource "aws_lambda_function_event_invoke_config" "sync" {
  function_name                = aws_lambda_function.sync.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = max(60, var.interval * 60)
}

# ---- schedule ---------------------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "schedule" {
  name                = local.name
  description         = "keybridge-sync for ${var.app}: every ${var.interval} min at its hashed offset"
  schedule_expression = local.schedule_expression
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "sync" {
  rule = aws_cloudwatch_event_rule.schedule.name
  arn  = aws_lambda_function.sync.arn
}

resource "aws_lambda_permission" "schedule" {
  statement_id  = "keybridge-sync-schedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sync.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule.arn
}

# ---- alarm ------------------------------------------------------------------------------------

# A failed run: the syncer's EMF metric "failed" (secrets that failed, namespace keybridge/sync,
# dimension Application) plus Lambda's Errors, which also counts runs that failed before the
# application was known (their EMF dimension is "unknown"), timed out or crashed: every run that
# is not ok ends on /invocation/error (src/sync/lambda.c).
resource "aws_cloudwatch_metric_alarm" "failed_runs" {
  alarm_name          = "${local.name}-failed"
  alarm_description   = "keybridge-sync for ${var.app}: a run failed (see the summary's error in ${local.log_group_name})"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  metric_query {
    id          = "failures"
    expression  = "FILL(failed, 0) + FILL(errors, 0)"
    label       = "failed secrets + failed runs"
    return_data = true
  }
  metric_query {
    id = "failed"
    metric {
      namespace   = "keybridge/sync"
      metric_name = "failed"
      dimensions  = { Application = var.app }
      period      = var.interval * 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.sync.function_name }
      period      = var.interval * 60
      stat        = "Sum"
    }
  }
  tags = var.tags
}
