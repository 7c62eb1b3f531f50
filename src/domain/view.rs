//! A loan application read in place: its texts borrow from the record's bytes (or from an owned
//! [`LoanApplication`]), and the texts an audit row keeps share the record's buffer.

use bytes::Bytes;
use bytestring::ByteString;

use super::events::{CreditRequest, FieldValue, LoanApplication, ProtectedAttributes};

/// The fields of the Avro `CreditRequest` record, in schema order.
pub const CREDIT_REQUEST_FIELDS: [&str; 17] = [
    "status_of_existing_checking_account",
    "duration_in_month",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings_account_and_bonds",
    "present_employment_since",
    "installment_rate_in_percentage_of_disposable_income",
    "other_debtors_or_guarantors",
    "present_residence_since",
    "property",
    "other_installment_plans",
    "housing",
    "number_of_existing_credits_at_this_bank",
    "job",
    "number_of_people_being_liable_to_provide_maintenance_for",
    "telephone",
];

/// A loan application, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApplicationView<'a> {
    pub application_id: &'a str,
    /// Submission time, milliseconds since the Unix epoch.
    pub event_time: i64,
    pub credit_request: CreditRequestView<'a>,
    pub protected: ProtectedView<'a>,
}

/// The model inputs, borrowed: one value per [`CREDIT_REQUEST_FIELDS`] entry, same positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreditRequestView<'a> {
    pub values: [FieldValue<'a>; 17],
}

/// The monitoring-only attributes, borrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProtectedView<'a> {
    pub personal_status_and_sex: Option<&'a str>,
    pub age_in_years: Option<i32>,
    pub foreign_worker: Option<&'a str>,
}

impl<'a> CreditRequestView<'a> {
    /// The field named `name` (a model-card feature name), or `None` when no such field exists.
    pub fn field(&self, name: &str) -> Option<FieldValue<'a>> {
        CREDIT_REQUEST_FIELDS.iter().position(|field| *field == name).map(|index| self.values[index])
    }
}

impl ProtectedView<'_> {
    /// The attributes, sharing `source`'s buffer where they were read from it.
    pub fn to_attributes_within(&self, source: Option<&Bytes>) -> ProtectedAttributes {
        ProtectedAttributes {
            personal_status_and_sex: self.personal_status_and_sex.map(|text| share(source, text)),
            age_in_years: self.age_in_years,
            foreign_worker: self.foreign_worker.map(|text| share(source, text)),
        }
    }
}

/// `text` sharing `source`'s buffer when it lies within it (no copy), else a copy of it.
pub fn share(source: Option<&Bytes>, text: &str) -> ByteString {
    let (buffer, wanted) = (source.map(|source| source.as_ptr_range()), text.as_bytes().as_ptr_range());
    match source.zip(buffer) {
        Some((source, buffer)) if buffer.start <= wanted.start && wanted.end <= buffer.end => {
            ByteString::try_from(source.slice_ref(text.as_bytes())).expect("a slice of a str is UTF-8")
        }
        _ => ByteString::from(text),
    }
}

impl LoanApplication {
    /// This application, borrowed.
    pub fn view(&self) -> ApplicationView<'_> {
        let protected = &self.protected_attributes;
        ApplicationView {
            application_id: &self.application_id,
            event_time: self.event_time,
            credit_request: self.credit_request.view(),
            protected: ProtectedView {
                personal_status_and_sex: protected.personal_status_and_sex.as_deref(),
                age_in_years: protected.age_in_years,
                foreign_worker: protected.foreign_worker.as_deref(),
            },
        }
    }
}

impl CreditRequest {
    /// These inputs, borrowed, in schema order.
    pub fn view(&self) -> CreditRequestView<'_> {
        fn text(value: &Option<String>) -> FieldValue<'_> {
            value.as_deref().map_or(FieldValue::Missing, FieldValue::Category)
        }
        fn int(value: Option<i32>) -> FieldValue<'static> {
            value.map_or(FieldValue::Missing, |value| FieldValue::Number(f64::from(value)))
        }
        CreditRequestView {
            values: [
                text(&self.status_of_existing_checking_account),
                int(self.duration_in_month),
                text(&self.credit_history),
                text(&self.purpose),
                self.credit_amount.map_or(FieldValue::Missing, FieldValue::Number),
                text(&self.savings_account_and_bonds),
                text(&self.present_employment_since),
                int(self.installment_rate_in_percentage_of_disposable_income),
                text(&self.other_debtors_or_guarantors),
                int(self.present_residence_since),
                text(&self.property),
                text(&self.other_installment_plans),
                text(&self.housing),
                int(self.number_of_existing_credits_at_this_bank),
                text(&self.job),
                int(self.number_of_people_being_liable_to_provide_maintenance_for),
                text(&self.telephone),
            ],
        }
    }

    /// The field named `name` (a model-card feature name), or `None` when no such field exists.
    pub fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.view().field(name)
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::Schema;

    use super::*;
    use crate::domain::LOAN_APPLICATION;

    /// The field list is the bundled schema's, in its order: the in-place reader and the views
    /// rely on those positions.
    #[test]
    fn field_order_is_the_schemas() {
        let Schema::Record(application) = &*LOAN_APPLICATION else { panic!("record") };
        let Schema::Record(request) = &application.fields[2].schema else { panic!("record") };
        let names: Vec<&str> = request.fields.iter().map(|field| field.name.as_str()).collect();
        assert_eq!(names, CREDIT_REQUEST_FIELDS);
    }

    /// Each field of an owned request lands at its own position of the view.
    #[test]
    fn a_request_views_every_field_in_place() {
        let request = CreditRequest {
            duration_in_month: Some(6),
            purpose: Some("business".into()),
            credit_amount: Some(1169.0),
            telephone: Some("none".into()),
            ..CreditRequest::default()
        };
        let view = request.view();
        assert_eq!(view.field("duration_in_month"), Some(FieldValue::Number(6.0)));
        assert_eq!(view.field("purpose"), Some(FieldValue::Category("business")));
        assert_eq!(view.field("credit_amount"), Some(FieldValue::Number(1169.0)));
        assert_eq!(view.field("telephone"), Some(FieldValue::Category("none")));
        assert_eq!(view.field("housing"), Some(FieldValue::Missing));
        assert_eq!(view.field("age_in_years"), None);
    }

    /// A text read from the record's bytes shares them; any other text (or no record) is copied.
    #[test]
    fn shared_texts_point_into_the_record() {
        let record = Bytes::from_static(b"..male : single..");
        let inside = std::str::from_utf8(&record[2..15]).unwrap();
        let shared = share(Some(&record), inside);
        assert_eq!((&*shared, shared.as_ptr()), ("male : single", inside.as_ptr()));
        let elsewhere = String::from("male : single");
        let copied = share(Some(&record), &elsewhere);
        assert_eq!(&*copied, "male : single");
        assert_ne!(copied.as_ptr(), elsewhere.as_ptr());
        assert_eq!(&*share(None, "yes"), "yes");
        assert_eq!(&*share(Some(&record), &inside[..0]), "");
    }
}
