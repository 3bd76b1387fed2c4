# Consul ACL policy of whoever runs `switchyard deploy | switch | rollback |
# status | diagnose`: read the instances and proxies, write the route keys,
# the switch history and the controller's lock.
#
#   consul acl policy create -name switchyard-operator -rules @config/acl/consul-operator.hcl
#   consul acl token create -description "switchyard operator" -policy-name switchyard-operator
#
# `switchyard dev --secure` loads this very file and puts a token holding it
# in <data-dir>/dev.env (CONSUL_HTTP_TOKEN).

service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}

# switchyard/routes/<service> (the active colour), switchyard/state/<service>
# (the history) and the controller's lock keys.
key_prefix "switchyard/" {
  policy = "write"
}

# The controller's lock is a KV acquire with a session on this node.
session_prefix "" {
  policy = "write"
}
