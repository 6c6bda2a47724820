#!/bin/sh
# MLflow tracking server with basic authentication; the admin account comes from the environment.
set -eu
: "${MLFLOW_ADMIN_USER:?}" "${MLFLOW_ADMIN_PASSWORD:?}" "${MLFLOW_BACKEND_STORE_URI:?}" "${MLFLOW_AUTH_DATABASE_URI:?}"
config="$(mktemp -d)/basic_auth.ini"
umask 077
cat > "$config" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_ADMIN_USER}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination /mlartifacts \
  --serve-artifacts \
  --host 0.0.0.0 --port 5000 --workers 2
