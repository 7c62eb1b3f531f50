//! The bundled `LoanApplication` schema read in place: no allocation, texts borrowed from the
//! body. Used only for bodies whose writer schema is the bundled one (compared structurally), and
//! it accepts exactly what apache-avro's strict reader accepts for that schema (varints of at
//! most ten bytes, union indexes 0 or 1, `int`s within 32 bits, UTF-8 texts), which the tests
//! check against apache-avro on valid, truncated and arbitrary bodies.

use super::CodecError;
use crate::domain::{ApplicationView, CreditRequestView, FieldValue, ProtectedView, CREDIT_REQUEST_FIELDS};

/// The Avro type of a `CreditRequest` field (each is a union of null and this).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire {
    Text,
    Int,
    Double,
}

/// The wire types of [`CREDIT_REQUEST_FIELDS`], same positions.
const CREDIT_REQUEST_WIRE: [Wire; 17] = {
    use Wire::{Double, Int, Text};
    [Text, Int, Text, Text, Double, Text, Text, Int, Text, Int, Text, Text, Text, Int, Text, Int, Text]
};

/// Reads one application from the start of `body`; returns it and the bytes it took.
pub fn read_application(body: &[u8]) -> Result<(ApplicationView<'_>, usize), CodecError> {
    let mut cursor = Cursor { bytes: body, at: 0 };
    let application_id = cursor.text("application_id")?;
    let event_time = cursor.long("event_time")?;
    let mut values = [FieldValue::Missing; 17];
    for ((value, wire), name) in values.iter_mut().zip(CREDIT_REQUEST_WIRE).zip(CREDIT_REQUEST_FIELDS) {
        if cursor.present(name)? {
            *value = match wire {
                Wire::Text => FieldValue::Category(cursor.text(name)?),
                Wire::Int => FieldValue::Number(f64::from(cursor.int(name)?)),
                Wire::Double => FieldValue::Number(cursor.double(name)?),
            };
        }
    }
    let personal_status_and_sex = cursor.optional_text("personal_status_and_sex")?;
    let age_in_years = if cursor.present("age_in_years")? { Some(cursor.int("age_in_years")?) } else { None };
    let foreign_worker = cursor.optional_text("foreign_worker")?;
    let application = ApplicationView {
        application_id,
        event_time,
        credit_request: CreditRequestView { values },
        protected: ProtectedView { personal_status_and_sex, age_in_years, foreign_worker },
    };
    Ok((application, cursor.at))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn fail(&self, field: &str, what: &str) -> CodecError {
        CodecError::Avro(format!("field {field}: {what} at byte {}", self.at))
    }

    fn take(&mut self, field: &str, count: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(count).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| self.fail(field, "the body ends early"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    /// A zig-zag varint `long`: seven bits a byte, low first, at most ten bytes.
    fn long(&mut self, field: &str) -> Result<i64, CodecError> {
        let mut value = 0u64;
        for index in 0..10 {
            let byte = self.take(field, 1)?[0];
            value |= u64::from(byte & 0x7f) << (index * 7);
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(self.fail(field, "a variable-length integer longer than ten bytes"))
    }

    fn int(&mut self, field: &str) -> Result<i32, CodecError> {
        let value = self.long(field)?;
        i32::try_from(value).map_err(|_| self.fail(field, "an int outside 32 bits"))
    }

    fn double(&mut self, field: &str) -> Result<f64, CodecError> {
        let bytes = self.take(field, 8)?;
        Ok(f64::from_le_bytes(bytes.try_into().expect("eight bytes")))
    }

    fn text(&mut self, field: &str) -> Result<&'a str, CodecError> {
        let length = self.long(field)?;
        let length = usize::try_from(length).map_err(|_| self.fail(field, "a negative length"))?;
        let bytes = self.take(field, length)?;
        std::str::from_utf8(bytes).map_err(|_| self.fail(field, "text that is not UTF-8"))
    }

    /// The branch of a `["null", T]` union: whether a value follows.
    fn present(&mut self, field: &str) -> Result<bool, CodecError> {
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.fail(field, "a union branch other than 0 or 1")),
        }
    }

    fn optional_text(&mut self, field: &str) -> Result<Option<&'a str>, CodecError> {
        if self.present(field)? {
            self.text(field).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::Schema;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{CreditRequest, LoanApplication, ProtectedAttributes, LOAN_APPLICATION};

    /// What apache-avro's strict reader makes of `body`, and the bytes it took.
    fn reference(body: &[u8]) -> Result<(LoanApplication, usize), String> {
        let reader = GenericDatumReader::builder(&LOAN_APPLICATION).build().unwrap();
        let mut remaining = body;
        let application = reader.read_deser::<LoanApplication>(&mut remaining).map_err(|error| error.to_string())?;
        Ok((application, body.len() - remaining.len()))
    }

    /// Both readers accept `body` or both refuse it; when they accept, they read the same
    /// application and take the same bytes.
    fn agree(body: &[u8]) {
        match (read_application(body), reference(body)) {
            (Ok((ours, taken)), Ok((theirs, expected))) => {
                // Debug, not ==: a NaN amount reads back as NaN from both.
                assert_eq!(format!("{ours:?}"), format!("{:?}", theirs.view()), "{body:?}");
                assert_eq!(taken, expected, "{body:?}");
            }
            (Err(_), Err(_)) => {}
            (ours, theirs) => panic!("{body:?}: in place {ours:?}, apache-avro {theirs:?}"),
        }
    }

    fn encoded(application: &LoanApplication) -> Vec<u8> {
        GenericDatumWriter::builder(&LOAN_APPLICATION).build().unwrap().write_ser_to_vec(application).unwrap()
    }

    fn sample() -> LoanApplication {
        LoanApplication {
            application_id: "a-ü-1".into(),
            event_time: -1_700_000_000_000,
            credit_request: CreditRequest {
                status_of_existing_checking_account: Some("no checking account".into()),
                duration_in_month: Some(i32::MIN),
                credit_amount: Some(f64::NAN),
                housing: Some(String::new()),
                number_of_people_being_liable_to_provide_maintenance_for: Some(i32::MAX),
                telephone: Some("none".into()),
                ..CreditRequest::default()
            },
            protected_attributes: ProtectedAttributes {
                personal_status_and_sex: Some("female : divorced/separated/married".into()),
                age_in_years: Some(-3),
                foreign_worker: None,
            },
        }
    }

    /// The wire types are the bundled schema's, field by field.
    #[test]
    fn wire_types_are_the_schemas() {
        let Schema::Record(application) = &*LOAN_APPLICATION else { panic!("record") };
        let Schema::Record(request) = &application.fields[2].schema else { panic!("record") };
        for (field, wire) in request.fields.iter().zip(CREDIT_REQUEST_WIRE) {
            let Schema::Union(union) = &field.schema else { panic!("{} is a union", field.name) };
            let expected = match wire {
                Wire::Text => Schema::String,
                Wire::Int => Schema::Int,
                Wire::Double => Schema::Double,
            };
            assert_eq!(union.variants(), [Schema::Null, expected], "{}", field.name);
        }
    }

    /// A full and an empty application, every truncation of each, and bodies with one byte
    /// changed: the same verdict and the same values as apache-avro.
    #[test]
    fn agrees_with_apache_avro_on_edits_of_valid_bodies() {
        let empty = LoanApplication {
            application_id: String::new(),
            event_time: 0,
            credit_request: CreditRequest::default(),
            protected_attributes: ProtectedAttributes::default(),
        };
        for application in [sample(), empty] {
            let body = encoded(&application);
            let (view, taken) = read_application(&body).unwrap();
            assert_eq!(taken, body.len());
            assert_eq!(view.application_id, application.application_id);
            for cut in 0..=body.len() {
                agree(&body[..cut]);
            }
            for position in 0..body.len() {
                for byte in [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x7f, 0x80, 0xc3, 0xff] {
                    let mut edited = body.clone();
                    edited[position] = byte;
                    agree(&edited);
                }
            }
        }
    }

    /// Overlong varints (ten bytes accepted, eleven refused), `int`s just outside 32 bits and
    /// negative lengths, as apache-avro reads them.
    #[test]
    fn agrees_on_integer_edge_cases() {
        let ten = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        let eleven = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        let tail = [0u8; 22];
        for id_length in [&ten[..], &eleven[..], &[0x01], &[0x81, 0x01]] {
            let body = [id_length, &tail[..]].concat();
            agree(&body);
        }
        let beyond_int = [0x80, 0x80, 0x80, 0x80, 0x10];
        let mut body = vec![0, 0, 0, 2];
        body.extend_from_slice(&beyond_int);
        body.extend_from_slice(&tail);
        agree(&body);
    }

    proptest! {
        /// Arbitrary bytes, and arbitrary bytes after a valid prefix: the same verdict.
        #[test]
        fn agrees_with_apache_avro_on_arbitrary_bytes(
            prefix in 0usize..60,
            noise in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            agree(&noise);
            let body = encoded(&sample());
            let mut mixed = body[..prefix.min(body.len())].to_vec();
            mixed.extend_from_slice(&noise);
            agree(&mixed);
        }
    }
}
