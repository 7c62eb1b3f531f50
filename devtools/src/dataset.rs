//! The German Credit CSV (UCI Statlog, CC BY 4.0) as typed applications with their labels.
//! Shared by `train` and `replay`, so training and serving see the same field mapping.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use credit_worker::domain::{CreditRequest, ProtectedAttributes};

/// One CSV row: the application and whether the loan defaulted ("bad").
#[derive(Debug, Clone)]
pub struct LabeledApplication {
    pub credit_request: CreditRequest,
    pub protected_attributes: ProtectedAttributes,
    pub defaulted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    status_of_existing_checking_account: String,
    duration_in_month: i32,
    credit_history: String,
    purpose: String,
    credit_amount: f64,
    savings_account_and_bonds: String,
    present_employment_since: String,
    installment_rate_in_percentage_of_disposable_income: i32,
    personal_status_and_sex: String,
    other_debtors_or_guarantors: String,
    present_residence_since: i32,
    property: String,
    age_in_years: i32,
    other_installment_plans: String,
    housing: String,
    number_of_existing_credits_at_this_bank: i32,
    job: String,
    number_of_people_being_liable_to_provide_maintenance_for: i32,
    telephone: String,
    foreign_worker: String,
    creditability: String,
}

/// Reads every row of the CSV at `path`.
pub fn read_german_credit(path: &Path) -> Result<Vec<LabeledApplication>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("opening data set {}", path.display()))?;
    let mut rows = Vec::new();
    for (index, row) in reader.deserialize::<Row>().enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), index + 2))?;
        rows.push(row.try_into().with_context(|| format!("{}: row {}", path.display(), index + 2))?);
    }
    Ok(rows)
}

impl TryFrom<Row> for LabeledApplication {
    type Error = anyhow::Error;

    fn try_from(row: Row) -> Result<Self> {
        let defaulted = match row.creditability.as_str() {
            "bad" => true,
            "good" => false,
            _ => anyhow::bail!("creditability must be good or bad"),
        };
        Ok(Self {
            credit_request: CreditRequest {
                status_of_existing_checking_account: Some(row.status_of_existing_checking_account),
                duration_in_month: Some(row.duration_in_month),
                credit_history: Some(row.credit_history),
                purpose: Some(row.purpose),
                credit_amount: Some(row.credit_amount),
                savings_account_and_bonds: Some(row.savings_account_and_bonds),
                present_employment_since: Some(row.present_employment_since),
                installment_rate_in_percentage_of_disposable_income: Some(
                    row.installment_rate_in_percentage_of_disposable_income,
                ),
                other_debtors_or_guarantors: Some(row.other_debtors_or_guarantors),
                present_residence_since: Some(row.present_residence_since),
                property: Some(row.property),
                other_installment_plans: Some(row.other_installment_plans),
                housing: Some(row.housing),
                number_of_existing_credits_at_this_bank: Some(row.number_of_existing_credits_at_this_bank),
                job: Some(row.job),
                number_of_people_being_liable_to_provide_maintenance_for: Some(
                    row.number_of_people_being_liable_to_provide_maintenance_for,
                ),
                telephone: Some(row.telephone),
            },
            protected_attributes: ProtectedAttributes {
                personal_status_and_sex: Some(row.personal_status_and_sex.into()),
                age_in_years: Some(row.age_in_years),
                foreign_worker: Some(row.foreign_worker.into()),
            },
            defaulted,
        })
    }
}
