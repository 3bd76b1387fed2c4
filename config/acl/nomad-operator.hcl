# Nomad ACL policy of whoever runs `switchyard deploy | switch | rollback |
# status | diagnose`: read the job, its versions, allocations, evaluations
# and deployments; register the standby group (after a plan), revert a
# failed deploy, promote or fail its deployment.
#
#   nomad acl policy apply -description "switchyard operator" switchyard-operator config/acl/nomad-operator.hcl
#   nomad acl token create -name "switchyard operator" -policy switchyard-operator
#
# `switchyard dev --secure` loads this very file and puts a token holding it
# in <data-dir>/dev.env (NOMAD_TOKEN).

namespace "default" {
  # read: list-jobs, parse-job, read-job (and volume/scaling reads).
  policy = "read"
  # register, plan and revert the job; promote and fail its deployments.
  capabilities = ["submit-job"]
}
