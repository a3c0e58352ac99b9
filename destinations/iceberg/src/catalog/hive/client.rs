//! The metastore connection: thrift calls with their errors made readable, and the Hive
//! table an Iceberg table is registered as (what Java's `HiveCatalog` and pyiceberg write).

use std::time::Duration;

use hive_metastore::{
    Database, EnvironmentContext, FieldSchema, LockComponent, LockLevel, LockRequest, LockResponse,
    LockType, SerDeInfo, StorageDescriptor, Table, ThriftHiveMetastoreClient,
    ThriftHiveMetastoreClientBuilder, ThriftHiveMetastoreCreateDatabaseException,
    ThriftHiveMetastoreCreateTableException, ThriftHiveMetastoreGetDatabaseException,
    ThriftHiveMetastoreGetTableException,
};
use iceberg::spec::{PrimitiveType, Schema, Type};
use pilota::{AHashMap, FastStr};
use volo_thrift::MaybeException;

use crate::error::{IcebergError, Result};

pub(super) const METADATA_LOCATION: &str = "metadata_location";
pub(super) const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";
pub(super) const TABLE_TYPE: &str = "table_type";
const ICEBERG: &str = "ICEBERG";

/// A metastore, and how to describe it in messages.
#[derive(Clone)]
pub(super) struct Metastore {
    client: ThriftHiveMetastoreClient,
    /// `thrift://host:port`, for messages.
    pub uri: String,
}

impl std::fmt::Debug for Metastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metastore").field("uri", &self.uri).finish()
    }
}

/// The message of a thrift exception struct (`MetaException { message }` and its kin).
macro_rules! message {
    ($e:expr) => {
        $e.message.as_deref().unwrap_or("(no message)").to_string()
    };
}

impl Metastore {
    /// A client for `uri` (`thrift://host:port`); connects on first call.
    pub(super) async fn new(uri: &str, timeout: Duration) -> Result<Self> {
        let address = uri.strip_prefix("thrift://").ok_or_else(|| {
            IcebergError::Config(format!(
                "catalog uri `{uri}`: a Hive Metastore address is thrift://host:port"
            ))
        })?;
        let address = address.trim_end_matches('/');
        let socket = tokio::net::lookup_host(address)
            .await
            .map_err(|e| IcebergError::Config(format!("catalog uri `{uri}`: {e}")))?
            .next()
            .ok_or_else(|| IcebergError::Config(format!("catalog uri `{uri}`: no address")))?;
        let client = ThriftHiveMetastoreClientBuilder::new("hms")
            .address(socket)
            .make_codec(volo_thrift::codec::default::DefaultMakeCodec::buffered())
            .connect_timeout(Some(Duration::from_secs(5).min(timeout)))
            .rpc_timeout(Some(timeout))
            .build();
        Ok(Self {
            client,
            uri: uri.to_string(),
        })
    }

    fn failed(&self, what: &str, message: String) -> IcebergError {
        IcebergError::Metastore {
            what: format!("{what} (Hive Metastore {})", self.uri),
            message,
            reached: true,
        }
    }

    /// A call that did not get an answer (connection refused, timeout, broken transport).
    pub(super) fn unreachable(&self, what: &str, e: volo_thrift::ClientError) -> IcebergError {
        IcebergError::Metastore {
            what: format!("{what} (Hive Metastore {})", self.uri),
            message: e.to_string(),
            reached: false,
        }
    }

    /// The database, `None` if it does not exist.
    pub(super) async fn database(&self, name: &str) -> Result<Option<Database>> {
        let what = format!("looking up database {name}");
        match self.client.get_database(name.to_string().into()).await {
            Ok(MaybeException::Ok(db)) => Ok(Some(db)),
            Ok(MaybeException::Exception(ThriftHiveMetastoreGetDatabaseException::O1(_))) => {
                Ok(None)
            }
            Ok(MaybeException::Exception(ThriftHiveMetastoreGetDatabaseException::O2(e))) => {
                Err(self.failed(&what, message!(e)))
            }
            Err(e) => Err(self.unreachable(&what, e)),
        }
    }

    /// Create a database at `location` (the metastore's default when `None`); one that
    /// another writer created meanwhile is fine.
    pub(super) async fn create_database(&self, name: &str, location: Option<String>) -> Result<()> {
        let db = Database {
            name: Some(name.to_string().into()),
            location_uri: location.map(Into::into),
            owner_name: Some(user().into()),
            owner_type: Some(hive_metastore::PrincipalType::USER),
            ..Default::default()
        };
        let what = format!("creating database {name}");
        match self.client.create_database(db).await {
            Ok(MaybeException::Ok(())) => Ok(()),
            Ok(MaybeException::Exception(ThriftHiveMetastoreCreateDatabaseException::O1(_))) => {
                Ok(())
            }
            Ok(MaybeException::Exception(e)) => Err(self.failed(&what, format!("{e:?}"))),
            Err(e) => Err(self.unreachable(&what, e)),
        }
    }

    /// The Hive table, `None` if it does not exist.
    pub(super) async fn table(&self, db: &str, name: &str) -> Result<Option<Table>> {
        let what = format!("looking up table {db}.{name}");
        match self
            .client
            .get_table(db.to_string().into(), name.to_string().into())
            .await
        {
            Ok(MaybeException::Ok(t)) => Ok(Some(t)),
            Ok(MaybeException::Exception(ThriftHiveMetastoreGetTableException::O2(_))) => Ok(None),
            Ok(MaybeException::Exception(ThriftHiveMetastoreGetTableException::O1(e))) => {
                Err(self.failed(&what, message!(e)))
            }
            Err(e) => Err(self.unreachable(&what, e)),
        }
    }

    /// Register a new table. `Ok(false)`: it exists already.
    pub(super) async fn create_table(&self, table: Table) -> Result<bool> {
        let what = format!(
            "creating table {}.{}",
            table.db_name.as_deref().unwrap_or_default(),
            table.table_name.as_deref().unwrap_or_default()
        );
        match self.client.create_table(table).await {
            Ok(MaybeException::Ok(())) => Ok(true),
            Ok(MaybeException::Exception(ThriftHiveMetastoreCreateTableException::O1(_))) => {
                Ok(false)
            }
            Ok(MaybeException::Exception(e)) => Err(self.failed(&what, format!("{e:?}"))),
            Err(e) => Err(self.unreachable(&what, e)),
        }
    }

    /// Replace the table's definition, without the metastore computing statistics (it would
    /// list the table's files). `Err(Ok(e))`: refused; `Err(Err(e))`: no answer.
    pub(super) async fn alter_table(
        &self,
        db: &str,
        name: &str,
        table: Table,
    ) -> std::result::Result<(), std::result::Result<IcebergError, volo_thrift::ClientError>> {
        let context = EnvironmentContext {
            properties: Some(AHashMap::from_iter([(
                FastStr::from_static_str("DO_NOT_UPDATE_STATS"),
                FastStr::from_static_str("true"),
            )])),
        };
        match self
            .client
            .alter_table_with_environment_context(
                db.to_string().into(),
                name.to_string().into(),
                table,
                context,
            )
            .await
        {
            Ok(MaybeException::Ok(())) => Ok(()),
            Ok(MaybeException::Exception(e)) => Err(Ok(
                self.failed(&format!("updating table {db}.{name}"), format!("{e:?}"))
            )),
            Err(e) => Err(Err(e)),
        }
    }

    /// Ask for an exclusive lock on the table, tagged with `agent` (unique per attempt, so a
    /// lock whose answer was lost can be found and released).
    pub(super) async fn lock(&self, db: &str, name: &str, agent: &str) -> Result<LockResponse> {
        let request = LockRequest {
            component: vec![LockComponent {
                r#type: LockType::EXCLUSIVE,
                level: LockLevel::TABLE,
                dbname: db.to_string().into(),
                tablename: Some(name.to_string().into()),
                ..Default::default()
            }],
            txnid: None,
            user: user().into(),
            hostname: host().into(),
            agent_info: Some(agent.to_string().into()),
        };
        let what = format!("locking table {db}.{name}");
        match self.client.lock(request).await {
            Ok(MaybeException::Ok(r)) => Ok(r),
            Ok(MaybeException::Exception(e)) => Err(self.failed(&what, format!("{e:?}"))),
            Err(e) => {
                // The lock may have been granted with the answer lost: release what carries
                // our tag (best effort; else the metastore times it out).
                if let Ok(shown) = self
                    .client
                    .show_locks(hive_metastore::ShowLocksRequest {
                        dbname: Some(db.to_string().into()),
                        tablename: Some(name.to_string().into()),
                        ..Default::default()
                    })
                    .await
                {
                    for lock in shown.locks.unwrap_or_default() {
                        if lock.agent_info.as_deref() == Some(agent) {
                            let _ = self.unlock(lock.lockid).await;
                        }
                    }
                }
                Err(self.unreachable(&what, e))
            }
        }
    }

    /// The lock's state now (checking also counts as a heartbeat).
    pub(super) async fn check_lock(&self, lockid: i64) -> Result<LockResponse> {
        let request = hive_metastore::CheckLockRequest {
            lockid,
            ..Default::default()
        };
        let what = format!("checking lock {lockid}");
        match self.client.check_lock(request).await {
            Ok(MaybeException::Ok(r)) => Ok(r),
            Ok(MaybeException::Exception(e)) => Err(self.failed(&what, format!("{e:?}"))),
            Err(e) => Err(self.unreachable(&what, e)),
        }
    }

    /// Keep the lock alive.
    pub(super) async fn heartbeat(&self, lockid: i64) -> Result<()> {
        let request = hive_metastore::HeartbeatRequest {
            lockid: Some(lockid),
            txnid: None,
        };
        let what = format!("heartbeat of lock {lockid}");
        match self.client.heartbeat(request).await {
            Ok(MaybeException::Ok(())) => Ok(()),
            Ok(MaybeException::Exception(e)) => Err(self.failed(&what, format!("{e:?}"))),
            Err(e) => Err(self.unreachable(&what, e)),
        }
    }

    /// Release the lock.
    pub(super) async fn unlock(&self, lockid: i64) -> Result<()> {
        let what = format!("releasing lock {lockid}");
        match self
            .client
            .unlock(hive_metastore::UnlockRequest { lockid })
            .await
        {
            Ok(MaybeException::Ok(())) => Ok(()),
            Ok(MaybeException::Exception(e)) => Err(self.failed(&what, format!("{e:?}"))),
            Err(e) => Err(self.unreachable(&what, e)),
        }
    }
}

/// The user the metastore records as owner and lock holder.
fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "pipe".into())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The value of a table parameter.
pub(super) fn parameter<'a>(table: &'a Table, key: &str) -> Option<&'a str> {
    table
        .parameters
        .as_ref()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Whether the Hive table is an Iceberg table.
pub(super) fn is_iceberg(table: &Table) -> bool {
    parameter(table, TABLE_TYPE).is_some_and(|t| t.eq_ignore_ascii_case(ICEBERG))
}

/// `table` (a new one when `None`) registered as the Iceberg table at `location` whose
/// metadata is `metadata_location`, with `schema`'s columns.
pub(super) fn iceberg_table(
    existing: Option<Table>,
    db: &str,
    name: &str,
    location: &str,
    schema: &Schema,
    metadata_location: &str,
    previous: Option<&str>,
) -> Result<Table> {
    let now = i32::try_from(chrono::Utc::now().timestamp()).unwrap_or(i32::MAX);
    let mut table = existing.unwrap_or_else(|| Table {
        table_name: Some(name.to_string().into()),
        db_name: Some(db.to_string().into()),
        owner: Some(user().into()),
        create_time: Some(now),
        last_access_time: Some(now),
        table_type: Some("EXTERNAL_TABLE".into()),
        partition_keys: Some(Vec::new()),
        ..Default::default()
    });
    let sd = table.sd.get_or_insert_with(|| StorageDescriptor {
        input_format: Some("org.apache.hadoop.mapred.FileInputFormat".into()),
        output_format: Some("org.apache.hadoop.mapred.FileOutputFormat".into()),
        serde_info: Some(SerDeInfo {
            serialization_lib: Some("org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    sd.location = Some(location.to_string().into());
    sd.cols = Some(columns(schema)?);
    let params = table.parameters.get_or_insert_with(AHashMap::default);
    params.insert("EXTERNAL".into(), "TRUE".into());
    params.insert(TABLE_TYPE.into(), ICEBERG.into());
    params.insert(
        METADATA_LOCATION.into(),
        metadata_location.to_string().into(),
    );
    match previous {
        Some(p) => {
            params.insert(PREVIOUS_METADATA_LOCATION.into(), p.to_string().into());
        }
        None => {
            params.remove(PREVIOUS_METADATA_LOCATION);
        }
    }
    Ok(table)
}

/// The schema as Hive columns (what Spark and Trino show for the table in the metastore).
fn columns(schema: &Schema) -> Result<Vec<FieldSchema>> {
    schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            Ok(FieldSchema {
                name: Some(f.name.clone().into()),
                r#type: Some(hive_type(&f.field_type).into()),
                comment: f.doc.clone().map(Into::into),
            })
        })
        .collect()
}

fn hive_type(t: &Type) -> String {
    match t {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "int".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Timestamp
            | PrimitiveType::Timestamptz
            | PrimitiveType::TimestampNs
            | PrimitiveType::TimestamptzNs => "timestamp".into(),
            PrimitiveType::Time | PrimitiveType::String | PrimitiveType::Uuid => "string".into(),
            PrimitiveType::Fixed(_) | PrimitiveType::Binary => "binary".into(),
        },
        Type::Struct(s) => {
            let fields: Vec<String> = s
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name, hive_type(&f.field_type)))
                .collect();
            format!("struct<{}>", fields.join(","))
        }
        Type::List(l) => format!("array<{}>", hive_type(&l.element_field.field_type)),
        Type::Map(m) => format!(
            "map<{},{}>",
            hive_type(&m.key_field.field_type),
            hive_type(&m.value_field.field_type)
        ),
    }
}
