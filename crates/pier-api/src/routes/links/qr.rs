//! `/v1/links/{id}/qr`: a link's short URL as a QR code, drawn as SVG or PNG from the code's
//! module matrix (so no image library is needed).

use std::ops::RangeInclusive;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use pier_core::ValidationErrors;
use qrcode::{Color, QrCode};
use serde::Deserialize;

use super::LinksState;
use super::crud::{LinkView, load};
use crate::AppState;
use crate::extract::{ApiQuery, OnResource, perm};
use crate::problem::{ApiError, ApiResult};

/// Image widths (and heights) a client may ask for, in pixels.
const SIZES: RangeInclusive<u32> = 64..=2048;
const DEFAULT_SIZE: u32 = 256;
/// The light margin around the code, in modules, that the QR specification asks for.
const QUIET_ZONE: usize = 4;

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QrFormat {
    #[default]
    Svg,
    Png,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QrParams {
    /// `svg` (the default) or `png`.
    #[param(inline)]
    format: Option<QrFormat>,
    /// The image's width and height in pixels (default 256).
    #[param(schema_with = size)]
    size: Option<u32>,
}

fn size() -> utoipa::openapi::Object {
    pier_core::schema::integer(&SIZES)
        .default(Some(DEFAULT_SIZE.into()))
        .build()
}

/// A QR code of the link's `short_url`, black on white with the quiet zone around it.
#[utoipa::path(
    get,
    path = "/v1/links/{id}/qr",
    operation_id = "getLinkQrCode",
    tag = "links",
    security(("bearer" = [])),
    params(("id" = inline(pier_links::LinkId), Path, description = "The link id"), QrParams),
    responses((
        status = 200,
        description = "The image, `size` pixels square",
        content((String = "image/svg+xml"), ([u8] = "image/png")),
        headers(("Cache-Control" = String))
    ))
)]
pub async fn qr(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    auth: OnResource<perm::LinksRead>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<QrParams>,
) -> ApiResult<Response> {
    let size = params.size.unwrap_or(DEFAULT_SIZE);
    let mut errors = ValidationErrors::new();
    errors.check_range("size", size, &SIZES);
    errors.into_result().map_err(ApiError::validation)?;
    let link = load(&state, auth.principal.workspace_id(), &id).await?;
    let short_url = LinkView::new(link, links.short_link_base()).short_url;
    let modules = Modules::encode(&short_url)?;
    if modules.side > size as usize {
        let message = format!(
            "must be at least {} for this link's code, one pixel a module",
            modules.side
        );
        return Err(ApiError::validation(ValidationErrors::single(
            "size",
            "too_small",
            message,
        )));
    }
    let (content_type, body) = match params.format.unwrap_or_default() {
        QrFormat::Svg => ("image/svg+xml", modules.svg(size).into_bytes()),
        QrFormat::Png => ("image/png", modules.png(size)?),
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=300"),
        ),
    ];
    Ok((headers, body).into_response())
}

/// A code's modules with the quiet zone around them: `side` × `side`, row by row.
struct Modules {
    side: usize,
    dark: Vec<bool>,
}

impl Modules {
    fn encode(text: &str) -> ApiResult<Self> {
        let code = QrCode::new(text.as_bytes())
            .map_err(|e| ApiError::internal(anyhow::anyhow!("encoding a QR code: {e}")))?;
        let width = code.width();
        let side = width + 2 * QUIET_ZONE;
        let mut dark = vec![false; side * side];
        for (i, color) in code.to_colors().into_iter().enumerate() {
            let (x, y) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
            dark[y * side + x] = color == Color::Dark;
        }
        Ok(Self { side, dark })
    }

    fn row(&self, y: usize) -> &[bool] {
        &self.dark[y * self.side..(y + 1) * self.side]
    }

    /// One module a unit of the view box, scaled to `size`; each run of dark modules in a row
    /// is one rectangle of the path.
    fn svg(&self, size: u32) -> String {
        let side = self.side;
        let mut path = String::new();
        for y in 0..side {
            let row = self.row(y);
            let mut x = 0;
            while x < side {
                let run = row[x..].iter().take_while(|dark| **dark).count();
                if run > 0 {
                    path += &format!("M{x} {y}h{run}v1h-{run}z");
                }
                x += run.max(1);
            }
        }
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" \
             viewBox=\"0 0 {side} {side}\" shape-rendering=\"crispEdges\">\
             <rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/>\
             <path fill=\"#000\" d=\"{path}\"/></svg>"
        )
    }

    /// A 1-bit grayscale PNG `size` pixels square: every module the same whole number of
    /// pixels, the pixels left over added to the margin.
    fn png(&self, size: u32) -> ApiResult<Vec<u8>> {
        let pixels = size as usize;
        let scale = pixels / self.side;
        let margin = (pixels - scale * self.side) / 2;
        let stride = pixels.div_ceil(8);
        // 1 is white; rows outside the code stay white.
        let mut image = vec![0xFF; stride * pixels];
        let mut line = vec![0xFF; stride];
        for y in 0..self.side {
            line.fill(0xFF);
            for (x, _) in self.row(y).iter().enumerate().filter(|(_, dark)| **dark) {
                for px in margin + x * scale..margin + (x + 1) * scale {
                    line[px / 8] &= !(0x80 >> (px % 8));
                }
            }
            let top = margin + y * scale;
            for py in top..top + scale {
                image[py * stride..(py + 1) * stride].copy_from_slice(&line);
            }
        }
        let mut png = Vec::new();
        let mut encoder = png::Encoder::new(&mut png, size, size);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        encoder
            .write_header()
            .and_then(|mut writer| writer.write_image_data(&image))
            .map_err(|e| ApiError::internal(anyhow::anyhow!("encoding a PNG: {e}")))?;
        Ok(png)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_keep_a_quiet_zone_and_fill_the_size() {
        let modules = Modules::encode("https://s.example/abc2345").expect("encodes");
        assert_eq!(modules.side, 25 + 2 * QUIET_ZONE, "a version 2 code");
        for edge in [0, QUIET_ZONE - 1, modules.side - QUIET_ZONE] {
            assert!(modules.row(edge).iter().all(|dark| !dark), "row {edge}");
        }
        // The finder pattern's corner is the first dark module.
        assert!(modules.row(QUIET_ZONE)[QUIET_ZONE]);

        let png = modules.png(105).expect("png");
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        // One byte a pixel, 0 black.
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().expect("a valid PNG");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut pixels).expect("a frame");
        assert_eq!((info.width, info.height), (105, 105));
        // 33 modules of 3 pixels leave 6, 3 on each side: the finder's 7 modules start at
        // 3 + 4 × 3 and end at 15 + 7 × 3.
        let dark = |x: usize, y: usize| pixels[y * info.line_size + x] == 0;
        assert!(dark(15, 15) && dark(35, 15) && dark(15, 35));
        assert!(!dark(14, 15) && !dark(15, 14) && !dark(36, 15));

        let svg = modules.svg(100);
        assert!(svg.starts_with("<svg ") && svg.contains("viewBox=\"0 0 33 33\""));
        assert!(svg.contains("M4 4h7v1h-7z"), "the finder's top edge: {svg}");
    }
}
