# Consul ACL policy of the switchyard proxy: discover the blue/green
# instances and follow the route key, nothing more. It cannot move traffic:
# writing switchyard/routes/<service> needs the operator's token.
#
#   consul acl policy create -name switchyard-proxy -rules @config/acl/consul-proxy.hcl
#   consul acl token create -description "switchyard proxy" -policy-name switchyard-proxy
#
# `switchyard dev --secure` loads this very file and gives its proxy a token
# holding it.

# /v1/health/service/<name> lists only the instances whose service and node
# the token may read.
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}

# The route keys (switchyard/routes/<service>), read with blocking queries.
key_prefix "switchyard/routes/" {
  policy = "read"
}

# A proxy with [registration] registers itself (and updates its TTL check).
service "switchyard-proxy" {
  policy = "write"
}
