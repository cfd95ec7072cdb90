#!/bin/sh
# Generate the secret files of deploy/docker-compose.yml: `sh deploy/make-secrets.sh [DIR]`
# (default deploy/secrets, git-ignored). Existing files are kept, so it is safe to re-run.
# One file per setting, named as Keel reads it (<key lowercase>, see README "Configuration");
# the same directory makes the Kubernetes Secret:
#   kubectl create secret generic keel-secrets --from-file=deploy/secrets/
# (set DB_HOST, MONGO_HOST to the service names of your cluster first, or edit database_url).
# Files are 0644 in a 0700 directory: compose bind-mounts them with their host mode and the app
# runs as uid 10001, so the directory is what keeps them private on the host.
set -eu
dir=${1:-"$(dirname "$0")/secrets"}
mkdir -p "$dir"
chmod 700 "$dir"

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(48))'; }

put() {  # put NAME VALUE: write the file unless it exists
    if [ ! -e "$dir/$1" ]; then
        printf '%s' "$2" > "$dir/$1"
        chmod 644 "$dir/$1"
        echo "make-secrets: wrote $dir/$1"
    fi
}

put jwt_secret_key "$(random)"
put api_key_pepper "$(random)"
put encryption_keys "$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
put vault_token "$(random)"
put postgres_password "$(random)"
put mongo_password "$(random)"
put database_url "postgresql://keel:$(cat "$dir/postgres_password")@${DB_HOST:-postgres}:5432/keel"
put mongodb_url "mongodb://keel:$(cat "$dir/mongo_password")@${MONGO_HOST:-mongo}:27017/keel?authSource=admin"
