//! Products, their tags and their topic categories.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lode_registry::{
    AuthType, DataFormat, NewProduct, NewTopicCategory, NodeType, PageRequest, ProductUpdate,
    RegistryError,
};

use crate::ApiState;
use crate::auth::Caller;
use crate::dto::{
    CreateProduct, CreateTopicCategory, PageQuery, ProductDto, ProductPage, TagKeysQuery, TagMap,
    TagsBody, TopicCategoryDto, TopicCategoryList, UpdateProduct, UpdateTopicCategory,
};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Page number and size of a listing (defaults 1 and 20).
pub(crate) fn page(page_no: Option<u32>, page_size: Option<u32>) -> ApiResult<(u32, u32)> {
    let no = page_no.unwrap_or(1);
    if no == 0 {
        return Err(ApiError::invalid("pageNo", "pages are numbered from 1"));
    }
    Ok((no, page_size.unwrap_or(20)))
}

/// Tag keys of a `keys=a,b` query.
pub(crate) fn tag_keys(q: &TagKeysQuery) -> ApiResult<Vec<String>> {
    let keys: Vec<String> = q
        .keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(ApiError::invalid("keys", "give at least one tag key"));
    }
    Ok(keys)
}

/// Creates a product with a new ProductKey and ProductSecret.
#[utoipa::path(post, path = "/api/v1/products", tag = "products",
    request_body = CreateProduct,
    responses(
        (status = 201, body = ProductDto),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidProductName, InvalidTag, TooManyTags, QuotaExceeded.ProductsPerAccount"),
    ))]
pub(crate) async fn create_product(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateProduct>,
) -> ApiResult<(StatusCode, Json<ProductDto>)> {
    let new = NewProduct {
        name: body.name,
        node_type: body.node_type.unwrap_or(NodeType::Direct),
        data_format: body.data_format.unwrap_or(DataFormat::AlinkJson),
        auth_type: body.auth_type.unwrap_or(AuthType::DeviceSecret),
        dynamic_registration: body.dynamic_registration,
        description: body.description,
        tags: body.tags,
    };
    let p = s.registry.create_product(&caller.account_id, new).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

/// Lists the caller's products, ordered by ProductKey.
#[utoipa::path(get, path = "/api/v1/products", tag = "products",
    params(PageQuery),
    responses(
        (status = 200, body = ProductPage),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidPageSize"),
    ))]
pub(crate) async fn list_products(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<ProductPage>> {
    let (page_no, page_size) = page(q.page_no, q.page_size)?;
    let p = s
        .registry
        .list_products(&caller.account_id, PageRequest::Page { page_no, page_size })
        .await?;
    Ok(Json(ProductPage {
        items: p.items.into_iter().map(Into::into).collect(),
        total: p.total,
        page_no,
        page_size,
    }))
}

/// A product of the caller.
#[utoipa::path(get, path = "/api/v1/products/{productKey}", tag = "products",
    params(("productKey" = String, Path)),
    responses(
        (status = 200, body = ProductDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
    ))]
pub(crate) async fn get_product(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
) -> ApiResult<Json<ProductDto>> {
    Ok(Json(s.owned_product(&caller, &pk).await?.into()))
}

/// Changes a product's name, description or dynamic registration.
#[utoipa::path(patch, path = "/api/v1/products/{productKey}", tag = "products",
    params(("productKey" = String, Path)),
    request_body = UpdateProduct,
    responses(
        (status = 200, body = ProductDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidProductName"),
    ))]
pub(crate) async fn update_product(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> ApiResult<Json<ProductDto>> {
    s.owned_product(&caller, &pk).await?;
    let update = ProductUpdate {
        name: body.name,
        description: body.description,
        dynamic_registration: body.dynamic_registration,
    };
    Ok(Json(s.registry.update_product(&pk, update).await?.into()))
}

/// Deletes a product without devices.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}", tag = "products",
    params(("productKey" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 409, body = ErrorBody, description = "ProductNotEmpty"),
    ))]
pub(crate) async fn delete_product(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.owned_product(&caller, &pk).await?;
    s.registry.delete_product(&pk).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds or replaces product tags; returns all of them.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/tags", tag = "products",
    params(("productKey" = String, Path)),
    request_body = TagsBody,
    responses(
        (status = 200, body = TagsBody),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidTag, TooManyTags"),
    ))]
pub(crate) async fn put_product_tags(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<TagsBody>,
) -> ApiResult<Json<TagsBody>> {
    s.owned_product(&caller, &pk).await?;
    let tags: TagMap = s.registry.set_product_tags(&pk, body.tags).await?;
    Ok(Json(TagsBody { tags }))
}

/// Removes product tags by key; returns the rest.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/tags", tag = "products",
    params(("productKey" = String, Path), TagKeysQuery),
    responses(
        (status = 200, body = TagsBody),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
    ))]
pub(crate) async fn delete_product_tags(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiQuery(q): ApiQuery<TagKeysQuery>,
) -> ApiResult<Json<TagsBody>> {
    s.owned_product(&caller, &pk).await?;
    let tags = s.registry.remove_product_tags(&pk, tag_keys(&q)?).await?;
    Ok(Json(TagsBody { tags }))
}

/// Topic categories of a product.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/topics", tag = "products",
    params(("productKey" = String, Path)),
    responses(
        (status = 200, body = TopicCategoryList),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
    ))]
pub(crate) async fn list_topics(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
) -> ApiResult<Json<TopicCategoryList>> {
    s.owned_product(&caller, &pk).await?;
    let items = s.registry.list_topic_categories(&pk).await?;
    Ok(Json(TopicCategoryList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// Adds a topic category.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/topics", tag = "products",
    params(("productKey" = String, Path)),
    request_body = CreateTopicCategory,
    responses(
        (status = 201, body = TopicCategoryDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidTopicTemplate, QuotaExceeded.TopicCategoriesPerProduct"),
        (status = 409, body = ErrorBody, description = "TopicCategoryAlreadyExists"),
    ))]
pub(crate) async fn create_topic(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<CreateTopicCategory>,
) -> ApiResult<(StatusCode, Json<TopicCategoryDto>)> {
    s.owned_product(&caller, &pk).await?;
    let t = s
        .registry
        .create_topic_category(
            &pk,
            NewTopicCategory {
                template: body.topic_short_name,
                permission: body.operation,
                description: body.desc,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

/// Changes a topic category; absent fields are kept.
#[utoipa::path(patch, path = "/api/v1/products/{productKey}/topics/{id}", tag = "products",
    params(("productKey" = String, Path), ("id" = i64, Path)),
    request_body = UpdateTopicCategory,
    responses(
        (status = 200, body = TopicCategoryDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, TopicCategoryNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidTopicTemplate"),
        (status = 409, body = ErrorBody, description = "TopicCategoryAlreadyExists"),
    ))]
pub(crate) async fn update_topic(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, id)): ApiPath<(String, i64)>,
    ApiJson(body): ApiJson<UpdateTopicCategory>,
) -> ApiResult<Json<TopicCategoryDto>> {
    s.owned_product(&caller, &pk).await?;
    let current = s
        .registry
        .list_topic_categories(&pk)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| RegistryError::TopicCategoryNotFound {
            product_key: pk.clone(),
            id,
        })?;
    let t = s
        .registry
        .update_topic_category(
            &pk,
            id,
            NewTopicCategory {
                template: body.topic_short_name.unwrap_or(current.template),
                permission: body.operation.unwrap_or(current.permission),
                description: body.desc.unwrap_or(current.description),
            },
        )
        .await?;
    Ok(Json(t.into()))
}

/// Deletes a topic category.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/topics/{id}", tag = "products",
    params(("productKey" = String, Path), ("id" = i64, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, TopicCategoryNotFound"),
    ))]
pub(crate) async fn delete_topic(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, id)): ApiPath<(String, i64)>,
) -> ApiResult<StatusCode> {
    s.owned_product(&caller, &pk).await?;
    s.registry.delete_topic_category(&pk, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
